//! The ledger state's invariants that consensus enforces, so that what a
//! co-signer missed still cannot enter the log.

mod common;

use common::*;
use provenance::*;

/// The state after one block registering the world's two sources, its
/// policy and its campaign.
fn registered(w: &World) -> LedgerState {
    let first: Vec<LedgerEntry> = [
        EntryBody::Manifest(w.globe.clone()),
        EntryBody::Manifest(w.folio.clone()),
        EntryBody::Policy(w.policy.clone()),
        EntryBody::Campaign(w.campaign.clone()),
    ]
    .iter()
    .map(|b| sign_all(b, &w.view, SignatureScheme::Bls12381))
    .collect();
    let mut state = LedgerState::new();
    state.apply_block(&first, Timestamp(T0)).expect("registered");
    state
}

/// A campaign opens under the current policy only: once a successor
/// supersedes it, a new campaign naming it is refused, up front
/// (`LedgerState::refuses`) and by the state transition; under the
/// successor one opens.
#[test]
fn a_campaign_cannot_open_under_a_superseded_policy() {
    let mut w = world();
    let p1 = w.policy.clone();
    let mut p2 = p1.clone();
    p2.supersedes = Some(p1.digest());
    p2.policy_version += 1;
    w.view.apply(&EntryBody::Policy(p2.clone()));
    let entry = |b: EntryBody| sign_all(&b, &w.view, SignatureScheme::Bls12381);
    let mut state = LedgerState::new();
    state
        .apply_block(&[entry(EntryBody::Policy(p1.clone()))], Timestamp(T0))
        .expect("the first policy");
    let early = EntryBody::Campaign(campaign(&p1));
    assert_eq!(state.refuses(&early), Ok(()));
    state
        .apply_block(&[entry(early)], Timestamp(T0 + 1))
        .expect("a campaign under the current policy");
    state
        .apply_block(&[entry(EntryBody::Policy(p2.clone()))], Timestamp(T0 + 2))
        .expect("the successor");
    let mut late = campaign(&p1);
    late.name = "opened after the successor".into();
    let late = EntryBody::Campaign(late);
    let reason = state.refuses(&late).expect_err("refused up front").to_string();
    assert!(reason.contains("superseded"), "{reason}");
    match state.after_block(&[entry(late)], Timestamp(T0 + 3)) {
        Err(StateError::Conflict { reason, .. }) => assert!(reason.contains("superseded"), "{reason}"),
        other => panic!("the state transition refuses it, got {other:?}"),
    }
    let mut current = campaign(&p2);
    current.name = "under the successor".into();
    state
        .apply_block(&[entry(EntryBody::Campaign(current))], Timestamp(T0 + 4))
        .expect("a campaign under the successor");
}

/// A record of a closed campaign, or one whose chain position another
/// record took, can never commit: refused up front, as the state
/// transition would refuse it.
#[test]
fn records_that_can_never_commit_are_refused_up_front() {
    let w = world();
    let entry = |b: &EntryBody| sign_all(b, &w.view, SignatureScheme::Bls12381);
    let mut state = registered(&w);
    let step = EntryBody::Step(w.step_event());
    assert_eq!(state.refuses(&step), Ok(()));
    state
        .apply_block(&[entry(&step)], Timestamp(T0 + 200))
        .expect("step 0");
    // Another record at position 0: taken.
    let mut other = w.step_event();
    other.step = 7;
    let other = EntryBody::Step(other);
    let reason = state.refuses(&other).expect_err("position taken").to_string();
    assert!(reason.contains("is taken"), "{reason}");
    assert!(state.after_block(&[entry(&other)], Timestamp(T0 + 300)).is_err());
    // Closed: the next record and a second close are refused.
    let close = EntryBody::CampaignClose(CampaignClose {
        version: 2,
        campaign: w.campaign.digest(),
        head: step.digest(),
        entries: 1,
        steps: 1,
        per_source: Vec::new(),
        final_state: Digest([9; 32]),
        order_end: 2,
        time: Timestamp(T0 + 300),
    });
    assert_eq!(state.refuses(&close), Ok(()));
    state
        .apply_block(&[entry(&close)], Timestamp(T0 + 300))
        .expect("closed");
    let mut next = w.step_event();
    next.link = ChainLink {
        campaign: w.campaign.digest(),
        seq: 1,
        prev: step.digest(),
    };
    let next = EntryBody::Step(next);
    let reason = state.refuses(&next).expect_err("closed").to_string();
    assert!(reason.contains("is closed"), "{reason}");
    assert!(state.refuses(&close).is_err(), "a second close");
}

/// The state transition refuses what co-signers might miss: a step naming
/// a source whose revocation is earlier in the log (in an earlier block or
/// earlier in the same one), a campaign record naming a superseded policy
/// (a running campaign either switches to the successor or closes), and a
/// refusal naming no example. Each is refused up front too.
#[test]
fn records_against_a_revocation_or_a_superseded_policy_are_refused() {
    let mut w = world();
    let p2 = {
        let mut p = w.policy.clone();
        p.supersedes = Some(w.policy.digest());
        p.policy_version += 1;
        p
    };
    w.view.apply(&EntryBody::Policy(p2.clone()));
    let entry = |b: &EntryBody| sign_all(b, &w.view, SignatureScheme::Bls12381);
    let step = EntryBody::Step(w.step_event());
    let revocation = EntryBody::Revocation(Revocation {
        version: 1,
        authority: w.globe.authority.clone(),
        source: w.globe.digest(),
        reason: "consent withdrawn".into(),
        requested: Timestamp(T0 + 50),
    });

    // The revocation in an earlier block.
    let mut state = registered(&w);
    state
        .apply_block(&[entry(&revocation)], Timestamp(T0 + 100))
        .expect("revoked");
    let reason = state.refuses(&step).expect_err("refused up front").to_string();
    assert!(
        reason.contains("was revoked") && reason.contains(&w.globe.digest().short()),
        "{reason}"
    );
    match state.after_block(&[entry(&step)], Timestamp(T0 + 200)) {
        Err(StateError::Conflict { reason, .. }) => assert!(reason.contains("was revoked"), "{reason}"),
        other => panic!("the state transition refuses it, got {other:?}"),
    }
    // Earlier in the same block, and later in it (the step first applies).
    let mut state = registered(&w);
    assert!(state
        .after_block(&[entry(&revocation), entry(&step)], Timestamp(T0 + 200))
        .is_err());
    state
        .apply_block(&[entry(&step), entry(&revocation)], Timestamp(T0 + 200))
        .expect("a step before the revocation commits");

    // A running campaign's records after its policy was superseded.
    let mut state = registered(&w);
    state
        .apply_block(&[entry(&EntryBody::Policy(p2.clone()))], Timestamp(T0 + 100))
        .expect("successor");
    let reason = state.refuses(&step).expect_err("refused up front").to_string();
    assert!(reason.contains("superseded"), "{reason}");
    assert!(state.after_block(&[entry(&step)], Timestamp(T0 + 200)).is_err());
    // It may switch: the same step under the successor applies.
    let mut switched = w.step_event();
    switched.policy = p2.digest();
    let switched = EntryBody::Step(switched);
    assert_eq!(state.refuses(&switched), Ok(()));
    state
        .apply_block(&[entry(&switched)], Timestamp(T0 + 200))
        .expect("a step under the successor");

    // A refusal names at least one example.
    let mut state = registered(&w);
    let refusal = |examples: Vec<refusal::ExampleRef>| {
        EntryBody::Refusal(Refusal {
            version: 2,
            link: ChainLink {
                campaign: w.campaign.digest(),
                seq: 0,
                prev: Digest::ZERO,
            },
            order: OrderSpan { start: 0, end: 1 },
            step: 0,
            policy: w.policy.digest(),
            examples,
            reason: RefusalReason::License,
            detail: String::new(),
            measurement: None,
            time: Timestamp(T0 + 100),
        })
    };
    let empty = refusal(Vec::new());
    assert!(state.refuses(&empty).is_err());
    assert!(state.after_block(&[entry(&empty)], Timestamp(T0 + 200)).is_err());
    let one = refusal(vec![refusal::ExampleRef {
        source: w.globe.digest(),
        index: 0,
        example_hash: Digest([1; 32]),
    }]);
    state
        .apply_block(&[entry(&one)], Timestamp(T0 + 200))
        .expect("a refusal naming an example");
}
