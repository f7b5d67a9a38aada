//! The co-signing table and each role's checks, with real keys and
//! signatures and no process or socket: honest entries complete, every
//! refusal each role can give is given, bad signatures are not counted.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use provenance::{
    AuthorityId, Canonical, Digest, EntryBody, RefusalReason, Revocation, SignatureScheme, Timestamp,
};

use super::*;
use crate::cosign::CoSignRefusal;
use crate::test_world::*;

/// A node's view for one call; `persisted` collects what it made durable.
struct Node<'w> {
    w: &'w World,
    index: usize,
    now_ms: u64,
    persisted: RefCell<Vec<Digest>>,
    fail_persist: bool,
}

impl<'w> Node<'w> {
    fn new(w: &'w World, index: usize) -> Self {
        Node {
            w,
            index,
            now_ms: T0 + 1_000,
            persisted: RefCell::default(),
            fail_persist: false,
        }
    }

    fn table(&self) -> Table {
        Table::new(self.w.signers[self.index].authority.authority().clone(), 4 << 20)
    }

    /// A peer's offer of `body` to table `t`, carrying its submitter's
    /// signature as an honest submitter's offer does.
    /// Offers `body` as a peer would; an effect check it asks for holds
    /// (the check itself is `tuner::witness`'s, tested there and on the
    /// network).
    fn peer_offer(&self, t: &mut Table, body: EntryBody) -> Result<(Digest, Vec<CoSignAction>), OfferError> {
        let (d, actions) = self.peer_offer_unchecked(t, body)?;
        Ok((d, self.resolve_effects(t, actions, EffectVerdict::Holds)))
    }

    /// Offers `body` as a peer would, leaving effect checks asked for.
    fn peer_offer_unchecked(
        &self,
        t: &mut Table,
        body: EntryBody,
    ) -> Result<(Digest, Vec<CoSignAction>), OfferError> {
        let sigs = self.w.submitter_sig(&body);
        self.with(|env| t.offer(env, body, sigs, false, None))
    }

    /// Answers each effect check in `actions` with `verdict`.
    fn resolve_effects(
        &self,
        t: &mut Table,
        actions: Vec<CoSignAction>,
        verdict: EffectVerdict,
    ) -> Vec<CoSignAction> {
        let mut out = Vec::new();
        for a in actions {
            match a {
                CoSignAction::CheckEffect { digest, .. } => {
                    out.extend(self.with(|env| t.on_effect(env, &digest, verdict.clone())))
                }
                a => out.push(a),
            }
        }
        out
    }

    fn with<R>(&self, f: impl FnOnce(&Env<'_>) -> R) -> R {
        let committed = |_: &Digest| false;
        let sigs = |d: &Digest| self.w.manifest_sigs.get(d).cloned();
        let persist = |d: &Digest, _: &[u8]| {
            if self.fail_persist {
                return Err("disk full".to_string());
            }
            self.persisted.borrow_mut().push(*d);
            Ok(())
        };
        let verified = provenance::crypto::VerifiedSignatures::default();
        let env = Env {
            keyring: &self.w.keyring,
            verified: &verified,
            signer: &self.w.signers[self.index].authority,
            state: &self.w.state,
            committed: &committed,
            manifest_signature: &sigs,
            persist: &persist,
            now_ms: self.now_ms,
            max_skew: 2_000,
            now: Instant::now(),
        };
        f(&env)
    }
}

fn signatures(actions: &[CoSignAction]) -> Vec<AuthoritySignature> {
    actions
        .iter()
        .filter_map(|a| match a {
            CoSignAction::Publish(g) => match g.as_ref() {
                Gossip::Signature { signature, .. } => Some(signature.clone()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

fn refusal_of(actions: &[CoSignAction]) -> Option<CoSignRefusal> {
    actions.iter().find_map(|a| match a {
        CoSignAction::RefusedHere { refusal, .. } => Some(refusal.clone()),
        _ => None,
    })
}

/// What node `index` answers to a peer's offer of `body`: its refusal,
/// or `None` if it signed. A refusal is also gossiped, with its text.
fn verdict_of(w: &World, index: usize, body: EntryBody, now_ms: u64) -> Option<CoSignRefusal> {
    let mut n = Node::new(w, index);
    n.now_ms = now_ms;
    let mut t = n.table();
    let mut sigs = w.submitter_sig(&body);
    sigs.retain(|s| s.authority != *w.signers[index].authority.authority());
    let (_, actions) = n
        .with(|env| t.offer(env, body, sigs, false, None))
        .expect("offer taken");
    let actions = n.resolve_effects(&mut t, actions, EffectVerdict::Holds);
    match refusal_of(&actions) {
        Some(r) => {
            let text = r.to_string();
            let gossiped = actions.iter().any(|a| match a {
                CoSignAction::Publish(g) => {
                    matches!(g.as_ref(), Gossip::Refusal { reason, .. } if *reason == text)
                }
                _ => false,
            });
            assert!(gossiped, "the refusal is gossiped with its reason");
            Some(r)
        }
        None => {
            assert_eq!(signatures(&actions).len(), 1, "signed once: {actions:?}");
            None
        }
    }
}

/// Commits globe-press's revocation of its source; returns the source.
fn revoke_globe(w: &mut World) -> Digest {
    let globe = w.sources[GLOBE].0.source_id();
    w.commit(vec![EntryBody::Revocation(Revocation {
        version: 1,
        authority: label("globe-press"),
        source: globe,
        reason: "withdrawn".into(),
        requested: Timestamp(T0),
    })]);
    globe
}

macro_rules! assert_refused {
    ($got:expr, $wanted:pat) => {
        match $got {
            Some(r) => assert!(
                matches!(r, $wanted),
                "refused for {r:?} ({r}), wanted {}",
                stringify!($wanted)
            ),
            None => panic!("signed, wanted a refusal {}", stringify!($wanted)),
        }
    };
}

/// The data sources' and governance's signatures of an offered step, each
/// after its effect check (which holds), added to `sigs`.
fn cosign_step(w: &World, body: &EntryBody, mut sigs: Vec<AuthoritySignature>) -> Vec<AuthoritySignature> {
    for i in [GLOBE, FOLIO, GOV] {
        let n = Node::new(w, i);
        let mut t = n.table();
        let (_, a) = n
            .with(|env| t.offer(env, body.clone(), sigs.clone(), false, None))
            .expect("offer");
        // A co-signer checks the step's effect before it signs.
        assert!(
            signatures(&a).is_empty() && a.iter().any(|x| matches!(x, CoSignAction::CheckEffect { .. })),
            "{a:?}"
        );
        let a = n.resolve_effects(&mut t, a, EffectVerdict::Holds);
        assert_eq!(refusal_of(&a), None);
        sigs.extend(signatures(&a));
    }
    sigs
}

#[test]
fn an_honest_step_is_signed_by_every_role_and_completes_on_the_operators_node() {
    let w = World::new();
    let body = EntryBody::Step(w.step(T0));
    let op = Node::new(&w, OP);
    let mut op_table = op.table();
    let (digest, actions) = op
        .with(|env| op_table.offer(env, body.clone(), Vec::new(), true, None))
        .expect("own step");
    assert_eq!(
        op.persisted.borrow().as_slice(),
        &[digest],
        "durable before it is offered"
    );
    let offered = actions
        .iter()
        .any(|a| matches!(a, CoSignAction::Publish(g) if matches!(g.as_ref(), Gossip::Offer { .. })));
    assert!(offered);
    let sigs = cosign_step(&w, &body, signatures(&actions));
    assert_eq!(sigs.len(), 4);
    let mut complete = None;
    for s in sigs {
        for a in op.with(|env| op_table.on_signature(env, &digest, s)) {
            if let CoSignAction::Complete(d, e) = a {
                complete = Some((d, e));
            }
        }
    }
    let (d, entry) = complete.expect("complete");
    assert_eq!(d, digest);
    entry
        .verify(&w.keyring, &w.state)
        .expect("the assembled entry verifies");
    assert_eq!(op_table.committed(&[digest], Instant::now()).len(), 1);
    assert!(op_table.is_empty());
}

/// A world whose policy audits every training record.
fn auditing_world() -> World {
    let mut p = crate::test_world::policy(1, None);
    p.audit.rate_millionths = provenance::audit::ALWAYS;
    World::with_policy(p)
}

/// Every signature gossiped in `actions`, with its audit.
fn audited_signatures(
    actions: &[CoSignAction],
) -> Vec<(AuthoritySignature, Option<provenance::audit::Audit>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            CoSignAction::Publish(g) => match g.as_ref() {
                Gossip::Signature { signature, audit, .. } => Some((signature.clone(), audit.clone())),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

#[test]
fn under_an_auditing_policy_each_auditor_signs_with_its_ticket_and_replay_and_the_entry_carries_them() {
    let w = auditing_world();
    let body = EntryBody::Step(w.step(T0));
    let op = Node::new(&w, OP);
    let mut op_table = op.table();
    let (digest, actions) = op
        .with(|env| op_table.offer(env, body.clone(), Vec::new(), true, None))
        .expect("own step");
    let mut signed = audited_signatures(&actions);
    assert!(
        signed.iter().all(|(_, a)| a.is_none()),
        "the operator does not audit"
    );
    let replay = Digest([9; 32]);
    for i in [GLOBE, FOLIO, GOV] {
        let n = Node::new(&w, i);
        let mut t = n.table();
        let sigs: Vec<AuthoritySignature> = signed.iter().map(|(s, _)| s.clone()).collect();
        let audits = signed.iter().filter_map(|(_, a)| a.clone()).collect();
        let (_, a) = n
            .with(|env| t.offer_audited(env, body.clone(), sigs, audits, false, None))
            .expect("offer");
        let a = n.resolve_effects(&mut t, a, EffectVerdict::Replayed(replay));
        assert_eq!(refusal_of(&a), None);
        let mine = audited_signatures(&a);
        assert_eq!(mine.len(), 1);
        let audit = mine[0].1.as_ref().expect("an auditor signs with its audit");
        assert!(audit.replay.as_ref().is_some_and(|r| r.digest == replay));
        signed.extend(mine);
    }
    // The operator's node takes a signature only with its audit.
    let (gov_sig, gov_audit) = signed.last().cloned().expect("governance signed");
    assert!(op
        .with(|env| op_table.on_signature(env, &digest, gov_sig.clone()))
        .is_empty());
    assert!(op_table.wants_signature(&digest, &gov_sig.authority));
    // One whose audit is another auditor's is misbehaviour.
    let foreign = signed[1].1.clone();
    let a = op.with(|env| op_table.on_audited_signature(env, &digest, gov_sig.clone(), foreign));
    assert!(a.iter().any(|x| matches!(x, CoSignAction::Misbehaved)), "{a:?}");
    // A replay stripped from a selecting ticket is misbehaviour too.
    let mut stripped = gov_audit.clone();
    if let Some(x) = stripped.as_mut() {
        x.replay = None;
    }
    let a = op.with(|env| op_table.on_audited_signature(env, &digest, gov_sig.clone(), stripped));
    assert!(a.iter().any(|x| matches!(x, CoSignAction::Misbehaved)), "{a:?}");
    let mut complete = None;
    for (s, a) in signed {
        for x in op.with(|env| op_table.on_audited_signature(env, &digest, s, a)) {
            if let CoSignAction::Complete(d, e) = x {
                complete = Some((d, e));
            }
        }
    }
    let (d, entry) = complete.expect("complete with its audits");
    assert_eq!(d, digest);
    assert_eq!(entry.audits.len(), 3);
    entry
        .verify(&w.keyring, &w.state)
        .expect("the audited entry verifies");
    let mut cut = (*entry).clone();
    cut.audits.pop();
    assert!(matches!(
        cut.verify(&w.keyring, &w.state),
        Err(provenance::EntryError::Audit(_))
    ));
}

#[test]
fn an_auditor_whose_ticket_selects_a_record_it_did_not_replay_refuses_it() {
    let w = auditing_world();
    let body = EntryBody::Step(w.step(T0));
    let n = Node::new(&w, GOV);
    let mut t = n.table();
    let (_, a) = n
        .with(|env| t.offer(env, body.clone(), w.submitter_sig(&body), false, None))
        .expect("offer");
    let a = n.resolve_effects(&mut t, a, EffectVerdict::Holds);
    match refusal_of(&a) {
        Some(CoSignRefusal::Replay(why)) => assert!(why.contains("did not replay"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(signatures(&a).is_empty());
}

#[test]
fn a_data_source_refuses_each_bad_use_of_its_source() {
    let mut w = World::new();
    // An example that is not in the source.
    let mut forged = w.step(T0);
    forged.examples[0].example_hash = Digest([9; 32]);
    assert_refused!(
        verdict_of(&w, GLOBE, EntryBody::Step(forged), T0 + 1_000),
        CoSignRefusal::NotInSource { index: 0, .. }
    );
    // A step time ahead of the clock, and one too old to commit.
    assert_refused!(
        verdict_of(&w, GLOBE, EntryBody::Step(w.step(T0 + 60_000)), T0),
        CoSignRefusal::TimeAhead { .. }
    );
    assert_refused!(
        verdict_of(&w, GLOBE, EntryBody::Step(w.step(T0)), T0 + 100_000),
        CoSignRefusal::TooLate { .. }
    );
    // Outside the source's validity window.
    let late = T0 + 2 * 86_400_000;
    let mut step = w.step(T0);
    step.step_time = Timestamp(late);
    assert_refused!(
        verdict_of(&w, GLOBE, EntryBody::Step(step), late),
        CoSignRefusal::OutsideValidity { .. }
    );
    // A campaign whose purpose the source does not allow.
    let other = campaign(&w.policy, "commercial", "c2");
    w.commit(vec![EntryBody::Campaign(other.clone())]);
    let mut step = w.step(T0);
    step.link.campaign = other.digest();
    assert_refused!(
        verdict_of(&w, GLOBE, EntryBody::Step(step), T0 + 1_000),
        CoSignRefusal::PurposeNotAllowed { .. }
    );
    // A source its authority revoked.
    revoke_globe(&mut w);
    // Its own check refuses the use; and once the revocation is in the
    // log, no node takes a step naming the source at all (the state rule
    // consensus enforces), the other data source's included.
    let sigs = |d: &Digest| w.manifest_sigs.get(d).cloned();
    let ctx = crate::cosign::CheckContext {
        keyring: &w.keyring,
        state: &w.state,
        manifest_signature: &sigs,
        now: Timestamp(T0 + 1_000),
        max_skew: 2_000,
    };
    assert!(matches!(
        crate::cosign::check_section(
            Role::DataSource,
            &label("globe-press"),
            &EntryBody::Step(w.step(T0)),
            &ctx
        ),
        Err(CoSignRefusal::Revoked { .. })
    ));
    for index in [GLOBE, FOLIO, GOV] {
        let n = Node::new(&w, index);
        let mut t = n.table();
        let r = n.peer_offer(&mut t, EntryBody::Step(w.step(T0)));
        assert!(
            matches!(&r, Err(OfferError::Refused(m)) if m.contains("was revoked")),
            "{r:?}"
        );
        assert!(t.is_empty());
    }
}

#[test]
fn governance_refuses_what_the_policy_does_not_allow() {
    let mut w = World::new();
    // A policy that is neither the campaign's nor its successor.
    let stray = policy(2, None);
    let successor = policy(2, Some(w.policy.digest()));
    let mut step = w.step(T0);
    step.policy = stray.digest();
    // (Unregistered: the plan cannot even be made.)
    let n = Node::new(&w, GOV);
    let mut t = n.table();
    let r = n.with(|env| t.offer(env, EntryBody::Step(step), Vec::new(), false, None));
    assert!(matches!(
        r,
        Err(OfferError::Unplannable(provenance::EntryError::UnknownPolicy(_)))
    ));
    // A recorded decision that is not the policy's.
    let mut step = w.step(T0);
    step.examples[0].decision.depth.max_depth += 1;
    assert_refused!(
        verdict_of(&w, GOV, EntryBody::Step(step), T0 + 1_000),
        CoSignRefusal::DecisionDiffers { index: 0, .. }
    );
    // An example the policy must refuse, trained on.
    let mut step = w.step(T0);
    step.examples[1] = w.record(2, 0, T0);
    assert_refused!(
        verdict_of(&w, GOV, EntryBody::Step(step), T0 + 1_000),
        CoSignRefusal::MustBeRefused {
            reason: RefusalReason::License,
            ..
        }
    );
    // A step too old to commit.
    assert_refused!(
        verdict_of(&w, GOV, EntryBody::Step(w.step(T0)), T0 + 100_000),
        CoSignRefusal::TooLate { .. }
    );
    // Refusals: the reason must be the policy's.
    let license = w.refusal(RefusalReason::License, 2, None);
    assert_eq!(verdict_of(&w, GOV, EntryBody::Refusal(license), T0 + 1_000), None);
    let wrong = w.refusal(RefusalReason::Revoked, 2, None);
    assert_refused!(
        verdict_of(&w, GOV, EntryBody::Refusal(wrong), T0 + 1_000),
        CoSignRefusal::WrongReason {
            actual: RefusalReason::License,
            claimed: RefusalReason::Revoked,
            ..
        }
    );
    let admissible = w.refusal(RefusalReason::License, GLOBE, None);
    assert_refused!(
        verdict_of(&w, GOV, EntryBody::Refusal(admissible), T0 + 1_000),
        CoSignRefusal::Admissible { .. }
    );
    // A memorisation refusal needs its measurement and a signal over the
    // threshold.
    let bare = w.refusal(RefusalReason::Memorisation, GLOBE, None);
    assert_refused!(
        verdict_of(&w, GOV, EntryBody::Refusal(bare), T0 + 1_000),
        CoSignRefusal::MemorisationWithoutMeasurement
    );
    let quiet = w.refusal(RefusalReason::Memorisation, GLOBE, Some(w.step(T0).measurement));
    assert_refused!(
        verdict_of(&w, GOV, EntryBody::Refusal(quiet), T0 + 1_000),
        CoSignRefusal::NoMemorisationSignal
    );
    let mut loud = w.step(T0).measurement;
    loud.signals.canary_exposure = 50.0;
    let loud = w.refusal(RefusalReason::Memorisation, GLOBE, Some(loud));
    assert_eq!(verdict_of(&w, GOV, EntryBody::Refusal(loud), T0 + 1_000), None);
    // Once a successor is registered, a record may switch to it; one still
    // naming the superseded policy is refused before any check.
    w.commit(vec![EntryBody::Policy(successor.clone())]);
    let mut step = w.step(T0);
    step.policy = successor.digest();
    assert_eq!(verdict_of(&w, GOV, EntryBody::Step(step), T0 + 1_000), None);
    let n = Node::new(&w, GOV);
    let mut t = n.table();
    let r = n.peer_offer(&mut t, EntryBody::Step(w.step(T0)));
    assert!(
        matches!(&r, Err(OfferError::Refused(m)) if m.contains("superseded")),
        "{r:?}"
    );
}

#[test]
fn an_operator_and_a_registrant_sign_only_what_their_own_tools_submitted() {
    let w = World::new();
    assert_refused!(
        verdict_of(&w, OP, EntryBody::Step(w.step(T0)), T0 + 1_000),
        CoSignRefusal::NotOwnMeasurement
    );
    let (m, _) = manifest("globe-press", "Another", &[b'a'; 64], "CC0-1.0");
    assert_refused!(
        verdict_of(&w, GLOBE, EntryBody::Manifest(m), T0 + 1_000),
        CoSignRefusal::NotOwnRegistration
    );
}

#[test]
fn bad_signatures_are_reported_and_a_refusal_stops_the_entry() {
    let w = World::new();
    let body = EntryBody::Step(w.step(T0));
    let op = Node::new(&w, OP);
    let mut t = op.table();
    let (digest, _) = op
        .with(|env| t.offer(env, body.clone(), Vec::new(), true, None))
        .expect("own");
    // Globe's signature over another entry's message.
    let other = EntryBody::Step(w.step(T0 + 1));
    let plan = other.signing_plan(&w.state).expect("plan");
    let wrong = w.signers[GLOBE]
        .authority
        .sign(SignatureScheme::Bls12381, &plan.requests[0].message)
        .expect("sign");
    let a = op.with(|env| t.on_signature(env, &digest, wrong));
    assert!(a.iter().any(|a| matches!(a, CoSignAction::Misbehaved)));
    match t.status(&digest) {
        Some(EntryStatus::Pending { signed, .. }) => assert_eq!(signed.len(), 1, "only the operator's own"),
        s => panic!("{s:?}"),
    }
    // An authority of three nodes signing 2-of-3 refuses only once two of
    // its nodes do (then two can no longer sign); one node, or the same
    // node twice, does not refuse for it.
    let mut t3 = op.table();
    let (d3, _) = op
        .with(|env| t3.offer(env, body.clone(), Vec::new(), true, None))
        .expect("own");
    for index in [0, 0] {
        assert!(t3
            .on_refusal(&d3, label("globe-press"), index, 2, "no".into())
            .is_empty());
        assert!(matches!(t3.status(&d3), Some(EntryStatus::Pending { .. })));
    }
    t3.on_refusal(&d3, label("globe-press"), 2, 2, "no".into());
    assert!(matches!(t3.status(&d3), Some(EntryStatus::Refused { .. })));
    // A refusal by a required signer is kept (and persisted: an own entry).
    let a = t.on_refusal(&digest, label("globe-press"), 0, 1, "no".into());
    assert!(a.iter().any(|a| matches!(a, CoSignAction::Persist { .. })));
    assert!(matches!(t.status(&digest), Some(EntryStatus::Refused { .. })));
    // One by an authority that is not a signer is ignored.
    let mut t2 = op.table();
    let (d2, _) = op
        .with(|env| t2.offer(env, other, Vec::new(), true, None))
        .expect("own");
    assert!(t2.on_refusal(&d2, label("nobody"), 0, 1, "no".into()).is_empty());
    assert!(matches!(t2.status(&d2), Some(EntryStatus::Pending { .. })));
}

#[test]
fn an_entry_that_cannot_be_stored_is_refused_and_not_held() {
    let w = World::new();
    let mut op = Node::new(&w, OP);
    op.fail_persist = true;
    let mut t = op.table();
    let r = op.with(|env| t.offer(env, EntryBody::Step(w.step(T0)), Vec::new(), true, None));
    assert!(matches!(r, Err(OfferError::NotStored(_))));
    assert!(t.is_empty());
}

#[test]
fn own_entries_are_reoffered_with_back_off_and_others_forgotten() {
    let w = World::new();
    let op = Node::new(&w, OP);
    let mut t = op.table();
    op.with(|env| t.offer(env, EntryBody::Step(w.step(T0)), Vec::new(), true, None))
        .expect("own");
    let start = Instant::now();
    let offers = |a: &[CoSignAction]| a.iter().filter(|a| matches!(a, CoSignAction::Publish(_))).count();
    let mut at = Vec::new();
    for ms in (0..40_000).step_by(250) {
        if offers(&t.tick(start + Duration::from_millis(ms))) > 0 {
            at.push(ms);
        }
    }
    // 1 s, then 2, 4, 8, 16, 16 ... s apart.
    let gaps: Vec<u64> = at.windows(2).map(|p| p[1] - p[0]).collect();
    assert_eq!(at[0], 1_000);
    assert!(gaps.starts_with(&[2_000, 4_000, 8_000, 16_000]), "{at:?}");
    // Another authority's entry is dropped after a while; an own one stays.
    let g = Node::new(&w, GLOBE);
    let mut gt = g.table();
    g.peer_offer(&mut gt, EntryBody::Step(w.step(T0)))
        .expect("peer offer");
    assert_eq!(gt.len(), 1);
    gt.tick(Instant::now() + FORGET_OTHERS_AFTER + Duration::from_secs(1));
    assert!(gt.is_empty());
    t.tick(Instant::now() + FORGET_OTHERS_AFTER + Duration::from_secs(1));
    assert_eq!(t.len(), 1);
}

#[test]
fn each_role_check_names_what_the_signing_plan_never_routes_to_it() {
    use crate::cosign::{check_section, CheckContext};
    let w = World::new();
    let sigs = |d: &Digest| w.manifest_sigs.get(d).cloned();
    let ctx = CheckContext {
        keyring: &w.keyring,
        state: &w.state,
        manifest_signature: &sigs,
        now: Timestamp(T0 + 1_000),
        max_skew: 2_000,
    };
    let globe: AuthorityId = label("globe-press");
    let gov: AuthorityId = label("standards-board");
    let ds = |body: EntryBody| check_section(Role::DataSource, &globe, &body, &ctx);
    let gv = |body: EntryBody| check_section(Role::Governance, &gov, &body, &ctx);
    let refusal = EntryBody::Refusal(w.refusal(RefusalReason::License, 2, None));
    assert!(matches!(ds(refusal), Err(CoSignRefusal::NotAnEvent)));
    let mut step = w.step(T0);
    step.examples = vec![w.record(FOLIO, 0, T0)];
    assert!(matches!(
        ds(EntryBody::Step(step)),
        Err(CoSignRefusal::NoneOfMine)
    ));
    let mut step = w.step(T0);
    step.link.campaign = Digest([7; 32]);
    assert!(matches!(
        ds(EntryBody::Step(step.clone())),
        Err(CoSignRefusal::UnknownCampaign(_))
    ));
    assert!(matches!(
        gv(EntryBody::Step(step)),
        Err(CoSignRefusal::UnknownCampaign(_))
    ));
    let mut step = w.step(T0);
    step.examples[0].source = Digest([8; 32]);
    assert!(matches!(
        ds(EntryBody::Step(step.clone())),
        Err(CoSignRefusal::UnknownSource(_))
    ));
    assert!(matches!(
        gv(EntryBody::Step(step)),
        Err(CoSignRefusal::UnknownSource(_))
    ));
    let manifest = EntryBody::Manifest(w.sources[GLOBE].0.clone());
    assert!(matches!(gv(manifest), Err(CoSignRefusal::NotACampaignRecord)));
    let mut step = w.step(T0);
    step.policy = Digest([9; 32]);
    assert!(matches!(
        gv(EntryBody::Step(step)),
        Err(CoSignRefusal::PolicyNotDescended(_))
    ));
    // A manifest whose signature is not in the log cannot be re-admitted.
    let none = |_: &Digest| None;
    let blind = CheckContext {
        manifest_signature: &none,
        ..ctx
    };
    assert!(matches!(
        check_section(Role::Governance, &gov, &EntryBody::Step(w.step(T0)), &blind),
        Err(CoSignRefusal::ManifestSignatureMissing(_))
    ));
    // And the honest step passes both checks directly.
    assert_eq!(ds(EntryBody::Step(w.step(T0))), Ok(()));
    assert_eq!(gv(EntryBody::Step(w.step(T0))), Ok(()));
}

/// An entry that cannot fit in a block is refused on arrival, from a peer
/// (not signed, not relayed) or from this node's own API (not stored), so
/// it can never be re-offered.
#[test]
fn an_entry_too_large_for_a_block_is_refused_and_not_relayed() {
    let w = World::new();
    let (mut m, _) = manifest("globe-press", "Globe (huge)", &[b'h'; 160], "CC0-1.0");
    m.segmentation = provenance::manifest::Segmentation::Boundaries {
        offsets: (0..600_000).collect(),
    };
    let body = EntryBody::Manifest(m);
    let bytes = provenance::codec::encode(&body).len();
    assert!(bytes > 4 << 20, "{bytes}");
    for (index, own) in [(GOV, false), (GLOBE, true)] {
        let n = Node::new(&w, index);
        let mut t = n.table();
        let r = n.with(|env| t.offer(env, body.clone(), Vec::new(), own, None));
        match r {
            Err(OfferError::TooLarge { bytes: b, limit }) => {
                assert!(b >= bytes && limit == 4 << 20, "{b} {limit}");
            }
            other => panic!("an oversized entry is refused, got {other:?}"),
        }
        assert!(t.is_empty(), "nothing held, so nothing re-offered");
        assert!(n.persisted.borrow().is_empty(), "nothing stored");
    }
    // Under a small budget, an entry whose body fits but whose signatures
    // would not is refused too.
    let step = EntryBody::Step(w.step(T0));
    let fits = provenance::codec::encode(&step).len();
    let n = Node::new(&w, GOV);
    let mut t = Table::new(w.signers[GOV].authority.authority().clone(), fits + 1);
    let r = n.peer_offer(&mut t, step.clone());
    assert!(matches!(r, Err(OfferError::TooLarge { .. })), "{r:?}");
    let mut t = Table::new(w.signers[GOV].authority.authority().clone(), 64 << 10);
    let (_, actions) = n.peer_offer(&mut t, step.clone()).expect("a step fits 64 KiB");
    assert_eq!(signatures(&actions).len(), 1);
}

/// An own step still pending when its campaign closes expires: its status
/// says why, its durable record is forgotten and it is not offered again;
/// one arriving after the close is refused outright.
#[test]
fn a_pending_step_expires_when_its_campaign_closes_and_is_not_offered_again() {
    let mut w = World::new();
    let step = EntryBody::Step(w.step(T0));
    let d = step.digest();
    let mut t = Node::new(&w, OP).table();
    Node::new(&w, OP)
        .with(|env| t.offer(env, step.clone(), Vec::new(), true, None))
        .expect("own");
    assert!(matches!(t.status(&d), Some(EntryStatus::Pending { .. })));
    // Another record takes position 0 and the campaign closes.
    let mut other = w.step(T0);
    other.step = 9;
    let other = EntryBody::Step(other);
    let head = other.digest();
    w.commit(vec![other]);
    w.commit(vec![EntryBody::CampaignClose(provenance::CampaignClose {
        version: 2,
        campaign: w.campaign.digest(),
        head,
        entries: 1,
        steps: 1,
        per_source: Vec::new(),
        final_state: Digest([9; 32]),
        order_end: 2,
        time: Timestamp(T0),
    })]);
    let actions = t.expire_hopeless(&w.state);
    assert!(
        matches!(actions.as_slice(), [CoSignAction::Forget { digest }] if *digest == d),
        "{actions:?}"
    );
    match t.status(&d) {
        Some(EntryStatus::Expired { reason }) => assert!(reason.contains("is closed"), "{reason}"),
        other => panic!("expired, got {other:?}"),
    }
    let start = Instant::now();
    for s in 0..40 {
        let published = t
            .tick(start + Duration::from_secs(s))
            .iter()
            .any(|a| matches!(a, CoSignAction::Publish(_)));
        assert!(!published, "an expired entry is not offered again");
    }
    assert!(t.expire_hopeless(&w.state).is_empty(), "expired once");
    // The same step offered now: refused with the reason.
    let mut t2 = Node::new(&w, OP).table();
    let r = Node::new(&w, OP).with(|env| t2.offer(env, step, Vec::new(), true, None));
    assert!(
        matches!(&r, Err(OfferError::Refused(m)) if m.contains("is closed")),
        "{r:?}"
    );
}

/// A step co-signed while its source was live and still pending when the
/// revocation commits expires with the revocation named; offered after
/// it, it is refused outright.
#[test]
fn a_pending_step_expires_when_its_source_is_revoked() {
    let mut w = World::new();
    let step = EntryBody::Step(w.step(T0));
    let d = step.digest();
    let op = Node::new(&w, OP);
    let mut t = op.table();
    op.with(|env| t.offer(env, step.clone(), Vec::new(), true, None))
        .expect("own");
    // The data sources sign it; governance is away.
    for index in [GLOBE, FOLIO] {
        let n = Node::new(&w, index);
        let mut nt = n.table();
        let (_, actions) = n.peer_offer(&mut nt, step.clone()).expect("taken");
        for sig in signatures(&actions) {
            op.with(|env| t.on_signature(env, &d, sig));
        }
    }
    match t.status(&d) {
        Some(EntryStatus::Pending { signed, missing, .. }) => {
            assert_eq!(signed.len(), 3, "{signed:?}");
            assert_eq!(missing, vec![label::<AuthorityId>("standards-board")]);
        }
        other => panic!("pending, got {other:?}"),
    }
    let globe = revoke_globe(&mut w);
    let actions = t.expire_hopeless(&w.state);
    assert!(matches!(actions.as_slice(), [CoSignAction::Forget { digest }] if *digest == d));
    match t.status(&d) {
        Some(EntryStatus::Expired { reason }) => {
            assert!(
                reason.contains("was revoked") && reason.contains(&globe.short()),
                "{reason}"
            )
        }
        other => panic!("expired, got {other:?}"),
    }
    let start = Instant::now();
    assert!((0..40).all(|s| t.tick(start + Duration::from_secs(s)).is_empty()));
}

/// An entry that does not commit within the genesis expiry (a co-signer
/// stays away) expires with the reason and is offered no more; so does a
/// step whose time no block could still accept. Neither holds the
/// authority's cap.
#[test]
fn an_entry_not_committed_in_time_expires_and_is_offered_no_more() {
    let w = World::new();
    let mut op = Node::new(&w, OP);
    let mut t = op.table().with_expiry(Duration::from_secs(30));
    let step = EntryBody::Step(w.step(op.now_ms));
    let d = step.digest();
    op.with(|env| t.offer(env, step, Vec::new(), true, None))
        .expect("own");
    let submitted = op.now_ms;
    assert!(t.expire_stale(submitted + 29_999, 2_000).is_empty());
    let actions = t.expire_stale(submitted + 30_000, 2_000);
    assert!(matches!(actions.as_slice(), [CoSignAction::Forget { digest }] if *digest == d));
    match t.status(&d) {
        Some(EntryStatus::Expired { reason }) => assert!(reason.contains("within 30 s"), "{reason}"),
        other => panic!("expired, got {other:?}"),
    }
    let start = Instant::now();
    assert!((0..40).all(|s| t.tick(start + Duration::from_secs(s)).is_empty()));
    assert!(
        t.expire_stale(submitted + 60_000, 2_000).is_empty(),
        "expired once"
    );
    // A step whose time is too old for any block from now on.
    op.now_ms += 1_000_000;
    let mut old = w.step(T0);
    old.step = 5;
    let old = EntryBody::Step(old);
    let mut t = op.table();
    op.with(|env| t.offer(env, old.clone(), Vec::new(), true, None))
        .expect("own");
    let actions = t.expire_stale(op.now_ms, 2_000);
    assert_eq!(actions.len(), 1);
    match t.status(&old.digest()) {
        Some(EntryStatus::Expired { reason }) => assert!(reason.contains("older than any block"), "{reason}"),
        other => panic!("expired, got {other:?}"),
    }
    // Restored after a restart, an entry keeps its submission time.
    let mut t = op.table().with_expiry(Duration::from_secs(30));
    let restored = Restored {
        refused: None,
        submitted_ms: op.now_ms - 31_000,
    };
    let mut fresh = w.step(op.now_ms);
    fresh.step = 6;
    op.with(|env| t.offer(env, EntryBody::Step(fresh), Vec::new(), true, Some(restored)))
        .expect("restored");
    assert_eq!(t.expire_stale(op.now_ms, 2_000).len(), 1);
}

/// One authority may hold at most its cap of pending entries (count and
/// bytes) in a node's table; beyond it its entries are refused with the
/// reason, while another authority's still go in; expired ones free room.
#[test]
fn an_authority_over_its_pending_cap_is_refused_and_others_are_not() {
    let w = World::new();
    let op = Node::new(&w, OP);
    let caps = PendingCaps {
        entries: 3,
        bytes: 1 << 20,
    };
    let mut t = op.table().with_caps(caps);
    let step = |k: u64| {
        let mut s = w.step(op.now_ms);
        s.step = k;
        EntryBody::Step(s)
    };
    for k in 0..3 {
        op.with(|env| t.offer(env, step(k), Vec::new(), true, None))
            .expect("under the cap");
    }
    let r = op.with(|env| t.offer(env, step(3), Vec::new(), true, None));
    match &r {
        Err(e @ OfferError::Full { authority, .. }) => {
            assert_eq!(authority.as_str(), "tuning-lab");
            assert!(e.to_string().contains("3 entries"), "{e}");
        }
        other => panic!("over the cap, got {other:?}"),
    }
    assert_eq!(t.len(), 3);
    assert_eq!(op.persisted.borrow().len(), 3, "the refused one was not stored");
    // Another authority's registration still goes in.
    let (m, _) = manifest("globe-press", "Globe (later)", &[b'g'; 160], "CC0-1.0");
    let g = Node::new(&w, GLOBE);
    g.peer_offer(&mut t, EntryBody::Manifest(m.clone()))
        .expect("another authority");
    // Bytes: a cap of two steps' bytes refuses the third.
    let one = provenance::codec::encode(&step(0)).len();
    let mut t = op.table().with_caps(PendingCaps {
        entries: 100,
        bytes: 2 * one + one / 2,
    });
    for k in 0..2 {
        op.with(|env| t.offer(env, step(k), Vec::new(), true, None))
            .expect("under the byte cap");
    }
    let r = op.with(|env| t.offer(env, step(2), Vec::new(), true, None));
    assert!(
        matches!(&r, Err(OfferError::Full { held, .. }) if held.contains("bytes")),
        "{r:?}"
    );
    // Expired entries free the room.
    let _ = t.expire_stale(op.now_ms + 700_000, 2_000);
    op.with(|env| t.offer(env, step(2), Vec::new(), true, None))
        .expect("room again");
}

/// A pending record written before submission times were kept still
/// restores (as submitted now); an unknown version is refused.
#[test]
fn a_version_1_pending_record_restores() {
    let w = World::new();
    let body = EntryBody::Step(w.step(T0));
    let v1 = provenance::codec::encode(&PendingRecordV1 {
        version: 1,
        body: body.clone(),
        signatures: Vec::new(),
        refused: None,
    });
    let r = PendingRecord::decode(&v1, 42).expect("v1");
    assert_eq!((r.version, r.submitted_ms), (2, 42));
    assert_eq!(r.body.digest(), body.digest());
    let mut v3 = v1.clone();
    v3[0] = 3;
    assert!(PendingRecord::decode(&v3, 42).is_err());
    assert!(PendingRecord::decode(&v1[..10], 42).is_err());
}

/// A peer's offer costs at most one verification per signer, the
/// submitter's first: more signatures than signers, two of one authority,
/// one of a non-signer, or none of the submitter are refused before any
/// pairing; a forged submitter signature stops the offer at once, and
/// nothing of a refused offer stays in the table.
#[test]
fn an_offer_is_checked_submitter_first_at_most_one_signature_per_signer() {
    let w = World::new();
    let step = EntryBody::Step(w.step(T0));
    let plan = step.signing_plan(&w.state).expect("plan");
    let signed_by = |i: usize, msg: &[u8]| {
        w.signers[i]
            .authority
            .sign(SignatureScheme::Bls12381, msg)
            .expect("sign")
    };
    let req = |a: &str| {
        plan.requests
            .iter()
            .find(|r| r.authority.as_str() == a)
            .expect("a signer")
            .message
            .clone()
    };
    let op_sig = signed_by(OP, &req("tuning-lab"));
    let globe_sig = signed_by(GLOBE, &req("globe-press"));
    let n = Node::new(&w, GOV);
    let offer = |sigs: Vec<AuthoritySignature>| {
        let mut t = n.table();
        let r = n
            .with(|env| t.offer(env, step.clone(), sigs, false, None))
            .map(|(d, a)| (d, n.resolve_effects(&mut t, a, EffectVerdict::Holds)));
        (r, t)
    };
    let extra = |sigs: Vec<AuthoritySignature>, why: &str| {
        let (r, t) = offer(sigs);
        assert!(
            matches!(&r, Err(OfferError::ExtraSignatures(m)) if m.contains(why)),
            "{r:?}"
        );
        assert!(t.is_empty(), "nothing held");
    };
    extra(
        vec![op_sig.clone(); plan.requests.len() + 1],
        "more signatures than",
    );
    extra(vec![op_sig.clone(), op_sig.clone()], "two signatures of one");
    let mut stray = globe_sig.clone();
    stray.authority = label("standards-board-2");
    extra(vec![op_sig.clone(), stray], "does not sign it");
    // No submitter signature: nothing is checked, nothing held.
    let (r, t) = offer(vec![globe_sig.clone()]);
    assert!(
        matches!(&r, Err(OfferError::Unsigned(a)) if a.as_str() == "tuning-lab"),
        "{r:?}"
    );
    assert!(t.is_empty());
    // A forged submitter signature, last in the list: checked first, the
    // offer stops there (one misbehaviour, no signature of ours), and the
    // entry is not held.
    let mut forged = op_sig.clone();
    forged.signature = globe_sig.signature.clone();
    let (r, t) = offer(vec![globe_sig.clone(), forged]);
    let (_, actions) = r.expect("taken as an offer");
    assert_eq!(
        actions
            .iter()
            .filter(|a| matches!(a, CoSignAction::Misbehaved))
            .count(),
        1,
        "{actions:?}"
    );
    assert!(
        signatures(&actions).is_empty(),
        "governance did not sign: {actions:?}"
    );
    assert!(t.is_empty());
    // The honest offer: the submitter's signature and globe's, then ours.
    let (r, t) = offer(vec![globe_sig, op_sig]);
    let (d, actions) = r.expect("taken");
    assert_eq!(signatures(&actions).len(), 1);
    assert!(!t.wants_signature(&d, &label("tuning-lab")), "already in");
    assert!(t.wants_signature(&d, &label("folio-society")));
}

/// Governance refuses a step whose recorded memorisation signal breaks the
/// policy: the policy wants it rolled back and refused, not committed.
/// The data sources' checks do not look at signals.
#[test]
fn governance_refuses_a_step_whose_memorisation_signal_breaks_the_policy() {
    let w = World::new();
    let limit = w.policy.memorisation.canary_exposure;
    let mut step = w.step(T0);
    step.measurement.signals.canary_exposure = limit * 2.0;
    assert_refused!(
        verdict_of(&w, GOV, EntryBody::Step(step.clone()), T0 + 1_000),
        CoSignRefusal::MemorisationNotRolledBack(_)
    );
    assert!(verdict_of(&w, GLOBE, EntryBody::Step(step.clone()), T0 + 1_000).is_none());
    // At the threshold: signed.
    step.measurement.signals.canary_exposure = limit;
    assert!(verdict_of(&w, GOV, EntryBody::Step(step), T0 + 1_000).is_none());
}

/// A co-signer signs a training event only once its effect holds: a
/// broken effect is refused with the reason (and published), an effect it
/// could not check yet is checked again at the next offer.
#[test]
fn a_co_signer_signs_an_event_only_once_its_effect_holds() {
    let w = World::new();
    let step = EntryBody::Step(w.step(T0));
    let n = Node::new(&w, GOV);
    // Not checkable yet: nothing signed, nothing refused; asked again.
    let mut t = n.table();
    let (d, a) = n.peer_offer_unchecked(&mut t, step.clone()).expect("taken");
    let a = n.resolve_effects(
        &mut t,
        a,
        EffectVerdict::Unchecked("no peer served the delta".into()),
    );
    assert!(signatures(&a).is_empty() && refusal_of(&a).is_none(), "{a:?}");
    let (_, again) = n
        .peer_offer_unchecked(&mut t, step.clone())
        .expect("offered again");
    assert!(
        again
            .iter()
            .any(|x| matches!(x, CoSignAction::CheckEffect { digest, .. } if *digest == d)),
        "checked again: {again:?}"
    );
    // Broken: refused with the witness's reason.
    let a = n.resolve_effects(
        &mut t,
        again,
        EffectVerdict::Broken(CoSignRefusal::Effect(
            "block 3: norm 0.1 stated, 0.2 in the blob".into(),
        )),
    );
    let reason = refusal_of(&a).expect("refused").to_string();
    assert!(reason.contains("effect: block 3: norm"), "{reason}");
    match t.status(&d) {
        Some(EntryStatus::Refused { by, reason }) => {
            assert_eq!(by, label::<AuthorityId>("standards-board"));
            assert!(reason.starts_with("effect:"), "{reason}");
        }
        other => panic!("refused, got {other:?}"),
    }
    // Holds: signed once.
    let mut t = n.table();
    let (_, a) = n.peer_offer(&mut t, step).expect("taken");
    assert_eq!(signatures(&a).len(), 1, "{a:?}");
}

/// The operator's node offers a step of `w`; governance's table `t` (of
/// node `n`) takes the offer with the operator's signature: the step's
/// digest and governance's actions.
fn governance_offered(w: &World, n: &Node<'_>, t: &mut Table) -> (Digest, Vec<CoSignAction>) {
    let body = EntryBody::Step(w.step(T0));
    let op = Node::new(w, OP);
    let mut op_table = op.table();
    let (digest, actions) = op
        .with(|env| op_table.offer(env, body.clone(), Vec::new(), true, None))
        .expect("own step");
    let sigs: Vec<AuthoritySignature> = audited_signatures(&actions).into_iter().map(|(s, _)| s).collect();
    let (_, a) = n
        .with(|env| t.offer_audited(env, body, sigs, Vec::new(), false, None))
        .expect("offer");
    (digest, a)
}

/// Under an auditing policy whose ticket selects the record, the effect
/// check is asked to replay it; a replay that differs refuses the record
/// and hands the runtime the auditor's evidence, which stands on its own:
/// the operator's signature from the offer, the selecting ticket, the
/// reason. Under a policy that audits nothing no replay is asked.
#[test]
fn a_failed_replay_refuses_the_record_and_yields_evidence_that_verifies() {
    let w = auditing_world();
    let n = Node::new(&w, GOV);
    let mut t = n.table();
    let (digest, a) = governance_offered(&w, &n, &mut t);
    assert!(
        a.iter()
            .any(|x| matches!(x, CoSignAction::CheckEffect { replay: true, .. })),
        "rate 1: the check replays: {a:?}"
    );
    let a = n.resolve_effects(
        &mut t,
        a,
        EffectVerdict::Failed("replayed block 0 delta: aa, stated bb".into()),
    );
    let reason = refusal_of(&a).expect("refused").to_string();
    assert!(reason.starts_with("replay audit: replayed block 0"), "{reason}");
    assert!(signatures(&a).is_empty());
    let evidence = a
        .iter()
        .find_map(|x| match x {
            CoSignAction::Evidence(e) => Some(e.clone()),
            _ => None,
        })
        .expect("evidence");
    assert_eq!(evidence.record.digest(), digest);
    assert_eq!(evidence.auditor.as_str(), "standards-board");
    assert!(evidence.reason.contains("replayed block 0 delta"));
    evidence
        .verify_evidence(&w.keyring, &w.state)
        .expect("the evidence stands on its own");
    // Its ticket is the auditor's for that position: another's fails.
    let mut other = (*evidence).clone();
    other.auditor = label("globe-press");
    assert!(other.verify_evidence(&w.keyring, &w.state).is_err());
    // A policy that audits nothing asks no replay.
    let plain = World::new();
    let n = Node::new(&plain, GOV);
    let mut t = n.table();
    let (_, a) = governance_offered(&plain, &n, &mut t);
    assert!(
        a.iter()
            .any(|x| matches!(x, CoSignAction::CheckEffect { replay: false, .. })),
        "{a:?}"
    );
}
