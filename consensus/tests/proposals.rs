//! A Byzantine leader's proposals are checked before anything of them is
//! kept: one claiming a height its parent cannot have is blamed, never
//! written, and does not block the leader's honest proposal of that view
//! from being judged.

use consensus::sim::{MockApp, MockScheme};
use consensus::{Action, Config, Engine, Height, Message, Misbehaviour, Proposal, View, GENESIS};

type Act = Action<u64, provenance::Digest, Vec<(u16, provenance::Digest)>>;

fn proposal(height: u64, stamp: u64, payload: u64) -> Proposal<u64> {
    Proposal {
        view: View(1),
        height: Height(height),
        parent: GENESIS,
        parent_view: View(0),
        stamp,
        proposer: 1,
        payload,
    }
}

fn propose(p: Proposal<u64>) -> Message<u64, provenance::Digest, Vec<(u16, provenance::Digest)>> {
    Message::Propose {
        proposal: p,
        parent: None,
        nullifications: Vec::new(),
    }
}

fn blamed(actions: &[Act]) -> Vec<&Misbehaviour> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Misbehaved { peer: 1, what } => Some(what),
            _ => None,
        })
        .collect()
}

fn voted(actions: &[Act]) -> bool {
    actions.iter().any(|a| {
        matches!(
            a,
            Action::Send {
                message: Message::Vote(_),
                ..
            }
        )
    })
}

#[test]
fn a_proposal_at_a_fake_height_is_blamed_and_never_kept() {
    // Validator 0 of 4; view 1's leader is validator 1.
    let cfg = Config::new(0, 4, 1_000, 500);
    assert_eq!(cfg.leader(View(1)), 1);
    let mut engine = Engine::new(cfg, MockScheme::new(0, 4, 3));
    let mut app = MockApp::new(0);
    engine.start(&mut app, 10);

    for (p, why) in [
        (
            proposal(1_000_000_000, 10, 7),
            "height is not parent's height + 1",
        ),
        (
            Proposal {
                parent_view: View(1),
                ..proposal(1, 10, 7)
            },
            "parent view is not before the proposal's view",
        ),
        // A later view of the same leader, views between not nullified:
        // its claim on genesis is still provably false.
        (
            Proposal {
                view: View(5),
                ..proposal(1_000_000_000, 10, 7)
            },
            "height is not parent's height + 1",
        ),
    ] {
        let p_view = p.view;
        let actions = engine.handle(&mut app, 1, propose(p));
        assert_eq!(
            blamed(&actions),
            vec![&Misbehaviour::InvalidProposal(p_view, why)],
            "{actions:?}"
        );
        assert!(!voted(&actions));
        assert!(app.kept.is_empty(), "nothing of it was written");
    }

    // Not remembered either: the leader's valid proposal for the same view
    // is no equivocation, and is voted for (kept first).
    let honest = proposal(1, 10, 7);
    let actions = engine.handle(&mut app, 1, propose(honest.clone()));
    assert!(blamed(&actions).is_empty(), "{actions:?}");
    assert!(voted(&actions), "{actions:?}");
    assert_eq!(app.kept, vec![honest]);
}

#[test]
fn a_proposal_this_validator_would_not_vote_for_is_not_kept() {
    let cfg = Config::new(0, 4, 1_000, 500);
    let mut engine = Engine::new(cfg, MockScheme::new(0, 4, 3));
    let mut app = MockApp::new(0);
    engine.start(&mut app, 10);
    // A payload every validator refuses (the mock's incomplete event): not
    // provably invalid from its header, so not blamed, but not written.
    let actions = engine.handle(&mut app, 1, propose(proposal(1, 10, u64::MAX)));
    assert!(blamed(&actions).is_empty());
    assert!(!voted(&actions));
    assert!(app.kept.is_empty());
}
