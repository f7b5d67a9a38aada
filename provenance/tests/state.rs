//! The ledger state's invariants that consensus enforces, so that what a
//! co-signer missed still cannot enter the log.

mod common;

use common::*;
use provenance::*;

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
