//! Authority signatures for every scheme: complete co-signatures verify; a
//! forged signature, a signature by the wrong role, a missing signer, an
//! unexpected signer and the wrong scheme are each refused with the
//! authority named. Threshold keys combine from t+1 shares and not from t.

mod common;

use common::*;
use provenance::crypto::{
    verify_cosignature, CoSignature, CoSigner, SignatureError, SignatureScheme, SignerBitmap,
};
use provenance::genesis::{deal, AuthorityDescription, ConsortiumDescription, GenesisError, NodeDescription};
use provenance::*;
use rand::SeedableRng;

const SCHEMES: [SignatureScheme; 3] = SignatureScheme::ALL;

fn world_for(scheme: SignatureScheme) -> World {
    let mut p = policy();
    p.signature_scheme = scheme;
    world_with(p)
}

#[test]
fn a_complete_step_event_verifies_under_every_scheme_with_one_section_per_authority() {
    for scheme in SCHEMES {
        let w = world_for(scheme);
        let body = EntryBody::Step(w.step_event());
        let plan = body.signing_plan(&w.view).expect("plan");
        let who: Vec<_> = plan
            .requests
            .iter()
            .map(|r| (r.authority.as_str().to_string(), r.role))
            .collect();
        assert_eq!(
            who,
            vec![
                ("folio-society".to_string(), Role::DataSource),
                ("globe-press".to_string(), Role::DataSource),
                ("standards-board".to_string(), Role::Governance),
                ("tuning-lab".to_string(), Role::Operator),
            ],
            "one section per data-source authority, then governance, then operator"
        );
        let entry = sign_all(&body, &w.view, scheme);
        entry.verify(fixture().keyring(), &w.view).expect("verifies");
    }
}

fn cosig(entry: &LedgerEntry) -> CoSignature {
    match &entry.attestation {
        Attestation::Authorities(c) => c.clone(),
        Attestation::Consortium(_) => panic!("authority entry expected"),
    }
}

#[test]
fn a_forged_signature_is_refused_and_named() {
    let f = fixture();
    for scheme in SCHEMES {
        let w = world_for(scheme);
        let body = EntryBody::Step(w.step_event());
        let plan = body.signing_plan(&w.view).expect("plan");
        // Governance's signature with one byte changed.
        let mut co = CoSigner::new(f.keyring(), scheme, plan.requests.clone()).expect("cosigner");
        let gov = &plan.requests[2];
        let mut forged = f
            .signer("standards-board")
            .authority
            .sign(scheme, &gov.message)
            .expect("sign");
        forged.signature.0[5] ^= 0x40;
        let err = co.add(forged).expect_err("forged share refused");
        assert!(
            matches!(&err, SignatureError::Bad { authority, .. } if authority.as_str() == "standards-board"),
            "{scheme}: {err}"
        );

        // A forged signature inside a finished co-signature.
        let entry = sign_all(&body, &w.view, scheme);
        let mut c = cosig(&entry);
        match &mut c {
            CoSignature::List { signatures, .. } => {
                signatures[1].signature.0[3] ^= 1;
                let err = verify_cosignature(f.keyring(), Some(scheme), &plan.requests, &c).expect_err("bad");
                assert!(
                    matches!(&err, SignatureError::Bad { authority, .. } if authority.as_str() == "globe-press"),
                    "{err}"
                );
            }
            CoSignature::Bls { aggregate, .. } => {
                // Replace the aggregate with a valid signature by one signer
                // alone: the point is valid, the aggregate is not.
                let alone = f
                    .signer("globe-press")
                    .authority
                    .sign(scheme, &plan.requests[1].message)
                    .expect("sign");
                *aggregate = alone.signature;
                let err = verify_cosignature(f.keyring(), Some(scheme), &plan.requests, &c).expect_err("bad");
                assert!(
                    matches!(&err, SignatureError::AggregateInvalid { signers } if signers.len() == 4),
                    "{err}"
                );
            }
        }
    }
}

#[test]
fn a_signature_by_the_wrong_role_is_refused() {
    let f = fixture();
    for scheme in SCHEMES {
        let w = world_for(scheme);
        // A "policy" authored by the operator.
        let mut p = w.policy.clone();
        p.authority = id("tuning-lab");
        let body = EntryBody::Policy(p);
        let plan = body.signing_plan(&w.view).expect("plan");
        let sig = f
            .signer("tuning-lab")
            .authority
            .sign(scheme, &plan.requests[0].message)
            .expect("sign");
        let c = match scheme {
            SignatureScheme::Bls12381 => CoSignature::Bls {
                signers: SignerBitmap::from_positions(4, [3]),
                aggregate: sig.signature.clone(),
            },
            s => CoSignature::List {
                scheme: s,
                signatures: vec![sig],
            },
        };
        let err = LedgerEntry::signed(body, c)
            .verify(f.keyring(), &w.view)
            .expect_err("wrong role");
        assert!(
            matches!(&err, EntryError::Signature(SignatureError::WrongRole { authority, expected: Role::Governance, actual: Role::Operator }) if authority.as_str() == "tuning-lab"),
            "{scheme}: {err}"
        );

        // A manifest claimed by the governance authority.
        let mut m = w.globe.clone();
        m.authority = id("standards-board");
        let body = EntryBody::Manifest(m);
        let plan = body.signing_plan(&w.view).expect("plan");
        assert!(matches!(
            CoSigner::new(f.keyring(), scheme, plan.requests),
            Err(SignatureError::WrongRole {
                expected: Role::DataSource,
                ..
            })
        ));
    }
}

#[test]
fn a_missing_signer_is_named() {
    let f = fixture();
    for scheme in SCHEMES {
        let w = world_for(scheme);
        let body = EntryBody::Step(w.step_event());
        let plan = body.signing_plan(&w.view).expect("plan");
        let mut co = CoSigner::new(f.keyring(), scheme, plan.requests.clone()).expect("cosigner");
        for r in plan
            .requests
            .iter()
            .filter(|r| r.authority.as_str() != "folio-society")
        {
            co.add(
                f.signer(r.authority.as_str())
                    .authority
                    .sign(scheme, &r.message)
                    .expect("sign"),
            )
            .expect("valid");
        }
        assert_eq!(co.missing().len(), 1);
        let err = co.finish().expect_err("incomplete");
        assert!(
            matches!(&err, SignatureError::Missing { authority, role: Role::DataSource } if authority.as_str() == "folio-society"),
            "{scheme}: {err}"
        );

        // Remove a signer from a finished co-signature.
        let entry = sign_all(&body, &w.view, scheme);
        let mut c = cosig(&entry);
        match &mut c {
            CoSignature::List { signatures, .. } => {
                signatures.retain(|s| s.authority.as_str() != "tuning-lab");
            }
            CoSignature::Bls { signers, .. } => {
                *signers = SignerBitmap::from_positions(4, [0, 1, 2]);
            }
        }
        let err = LedgerEntry::signed(body, c)
            .verify(f.keyring(), &w.view)
            .expect_err("missing");
        assert!(
            matches!(&err, EntryError::Signature(SignatureError::Missing { authority, role: Role::Operator }) if authority.as_str() == "tuning-lab"),
            "{scheme}: {err}"
        );
    }
}

#[test]
fn unexpected_signers_wrong_schemes_and_borrowed_signatures_are_refused() {
    let f = fixture();
    let w = world_for(SignatureScheme::Ed25519);
    let body = EntryBody::Manifest(w.globe.clone());
    let plan = body.signing_plan(&w.view).expect("plan");
    // (A manifest is signed under the scheme its authority declares, BLS
    // here; the checks below name Ed25519 to reach the signer checks.)
    let msg = &plan.requests[0].message;
    // An extra signature by an authority that is not required.
    let good = f
        .signer("globe-press")
        .authority
        .sign(SignatureScheme::Ed25519, msg)
        .expect("sign");
    let extra = f
        .signer("folio-society")
        .authority
        .sign(SignatureScheme::Ed25519, msg)
        .expect("sign");
    let c = CoSignature::List {
        scheme: SignatureScheme::Ed25519,
        signatures: vec![good.clone(), extra.clone()],
    };
    assert!(matches!(
        verify_cosignature(f.keyring(), Some(SignatureScheme::Ed25519), &plan.requests, &c),
        Err(SignatureError::Unexpected { authority }) if authority.as_str() == "folio-society"
    ));
    // Folio's signature relabelled as Globe's names a key Globe does not hold.
    let mut borrowed = extra;
    borrowed.authority = id("globe-press");
    let c = CoSignature::List {
        scheme: SignatureScheme::Ed25519,
        signatures: vec![borrowed],
    };
    assert!(matches!(
        verify_cosignature(f.keyring(), Some(SignatureScheme::Ed25519), &plan.requests, &c),
        Err(SignatureError::UnknownKey { .. })
    ));
    // Duplicate.
    let c = CoSignature::List {
        scheme: SignatureScheme::Ed25519,
        signatures: vec![good.clone(), good],
    };
    assert!(matches!(
        verify_cosignature(f.keyring(), Some(SignatureScheme::Ed25519), &plan.requests, &c),
        Err(SignatureError::Duplicate { .. })
    ));
    // The policy requires BLS; an Ed25519 co-signature of a step event is
    // refused even if every signature in it is valid.
    let wb = world_for(SignatureScheme::Bls12381);
    let ed = {
        let body = EntryBody::Step(wb.step_event());
        sign_all(&body, &wb.view, SignatureScheme::Ed25519)
    };
    assert!(matches!(
        ed.verify(f.keyring(), &wb.view),
        Err(EntryError::Signature(SignatureError::WrongScheme {
            expected: SignatureScheme::Bls12381,
            ..
        }))
    ));
    // A bitmap of the wrong width is malformed, not a panic.
    let c = CoSignature::Bls {
        signers: SignerBitmap {
            len: 9,
            bits: Bytes(vec![0xff, 0xff]),
        },
        aggregate: Bytes(vec![0; 96]),
    };
    assert!(matches!(
        verify_cosignature(f.keyring(), None, &plan.requests, &c),
        Err(SignatureError::Malformed { .. })
    ));
}

#[test]
fn a_revocation_by_another_authority_and_an_unregistered_source_are_refused() {
    let w = world();
    let r = Revocation {
        version: 1,
        authority: id("folio-society"),
        source: w.globe.source_id(),
        reason: "not mine".into(),
        requested: Timestamp(T0),
    };
    assert!(matches!(
        EntryBody::Revocation(r).signing_plan(&w.view),
        Err(EntryError::Invalid(_))
    ));
    let mut e = w.step_event();
    e.examples[0].source = Digest([1; 32]);
    assert!(matches!(
        EntryBody::Step(e).signing_plan(&w.view),
        Err(EntryError::UnknownSource(_))
    ));
}

fn threshold_consortium() -> provenance::genesis::Dealt {
    // n = 7, f = 2: an authority may run two validators.
    let node = |n: &str, i: u16| NodeDescription {
        name: n.into(),
        p2p_listen: format!("/ip4/127.0.0.1/tcp/{}", 7200 + i),
        api_listen: format!("127.0.0.1:{}", 8200 + i),
        signing_member: false,
        api_certificate: Default::default(),
    };
    let auth = |i: &str, role, nodes: Vec<NodeDescription>, t| AuthorityDescription {
        id: id(i),
        name: i.into(),
        role,
        scheme: SignatureScheme::Bls12381,
        threshold: t,
        nodes,
    };
    let desc = ConsortiumDescription {
        name: "threshold-net".into(),
        origin: None,
        witnessing: Default::default(),
        max_clock_skew_ms: 2000,
        params: Default::default(),
        authorities: vec![
            auth(
                "press",
                Role::DataSource,
                vec![node("press-1", 0), node("press-2", 1)],
                Some(1),
            ),
            auth(
                "archive",
                Role::DataSource,
                vec![node("archive-1", 2), node("archive-2", 3)],
                Some(0),
            ),
            auth("board", Role::Governance, vec![node("board-1", 4)], None),
            auth(
                "lab",
                Role::Operator,
                vec![node("lab-1", 5), node("lab-2", 6)],
                None,
            ),
        ],
    };
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(11);
    deal(&desc, Timestamp(T0), &mut rng).expect("n = 7 consortium deals")
}

#[test]
fn a_threshold_authority_signature_combines_from_t_plus_1_shares_and_fails_with_t() {
    let dealt = threshold_consortium();
    let g = &dealt.genesis;
    assert_eq!((g.consortium.n, g.consortium.f, g.consortium.q), (7, 2, 5));
    let signers: Vec<_> = dealt
        .nodes
        .iter()
        .map(|n| n.signers(g, &dealt.keyring).expect("keys match"))
        .collect();
    let press = id("press");
    let msg = b"section message";
    // Either press node alone cannot make the authority's signature.
    assert!(matches!(
        signers[0].authority.sign(SignatureScheme::Bls12381, msg),
        Err(SignatureError::ThresholdKey { threshold: 1, .. })
    ));
    let bls = SignatureScheme::Bls12381;
    let s0 = signers[0].authority.sign_share(bls, msg).expect("share");
    let s1 = signers[1].authority.sign_share(bls, msg).expect("share");
    // t = 1 share: not enough.
    assert!(matches!(
        dealt
            .keyring
            .combine_authority_shares(&press, bls, msg, std::slice::from_ref(&s0)),
        Err(SignatureError::NotEnoughShares { have: 1, need: 2, .. })
    ));
    // t + 1 = 2 shares: the authority's signature, verifying under its
    // genesis key like any other.
    let sig = dealt
        .keyring
        .combine_authority_shares(&press, bls, msg, &[s0.clone(), s1.clone()])
        .expect("combines");
    dealt
        .keyring
        .verify(&sig, msg)
        .expect("verifies under the group key");
    // A bad share is named, not silently skipped.
    let mut bad = s1;
    bad.share.0[10] ^= 1;
    assert!(matches!(
        dealt
            .keyring
            .combine_authority_shares(&press, bls, msg, &[s0, bad]),
        Err(SignatureError::BadShare { index: 1, .. })
    ));
    // archive has t = 0: one node signs for the authority.
    let archive_sig = signers[2]
        .authority
        .sign(SignatureScheme::Bls12381, msg)
        .expect("t = 0 signs alone");
    dealt.keyring.verify(&archive_sig, msg).expect("verifies");
    // The consortium key needs q = 5 validator shares; 4 are not enough.
    let shares: Vec<_> = signers
        .iter()
        .map(|s| s.consortium.as_ref().expect("a validator").sign_share(msg))
        .collect();
    assert!(matches!(
        dealt.keyring.combine_consortium_shares(msg, &shares[..4]),
        Err(SignatureError::NotEnoughShares { have: 4, need: 5, .. })
    ));
    let c = dealt
        .keyring
        .combine_consortium_shares(msg, &shares[2..])
        .expect("5 shares combine");
    assert!(dealt.keyring.verify_consortium(msg, c.as_slice()));
    assert!(!dealt.keyring.verify_consortium(b"other", c.as_slice()));
    // Pre-verified shares combine by interpolation alone to the same
    // signature; an unverified bad share yields one that does not verify,
    // and the checked path names it.
    let fast = dealt
        .keyring
        .combine_verified_consortium_shares(&shares[2..])
        .expect("combine");
    assert_eq!(fast, c);
    let mut tampered = shares[2..].to_vec();
    tampered[0] = signers[2]
        .consortium
        .as_ref()
        .expect("a validator")
        .sign_share(b"another message");
    let bad = dealt
        .keyring
        .combine_verified_consortium_shares(&tampered)
        .expect("interpolates");
    assert!(!dealt.keyring.verify_consortium(msg, bad.as_slice()));
    assert!(matches!(
        dealt.keyring.combine_consortium_shares(msg, &tampered),
        Err(SignatureError::BadShare { index: 2, .. })
    ));
}

#[test]
fn genesis_refuses_an_authority_with_more_than_f_validators_and_rogue_keys() {
    let mut desc = ConsortiumDescription::local_testnet(7100, 8100);
    let extra = NodeDescription {
        name: "node-x".into(),
        p2p_listen: "/ip4/127.0.0.1/tcp/7199".into(),
        api_listen: "127.0.0.1:8199".into(),
        signing_member: false,
        api_certificate: Default::default(),
    };
    desc.authorities[0].nodes.push(extra.clone());
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
    // n = 5, f = 1, and globe-press would run 2 validators.
    let err = deal(&desc, Timestamp(T0), &mut rng).expect_err("refused");
    assert!(
        matches!(
            err,
            GenesisError::TooManyValidators {
                validators: 2,
                f: 1,
                ..
            }
        ),
        "{err}"
    );
    // The same node as a signing member does not vote: n = 4, f = 1, and
    // globe-press runs one validator.
    let mut desc = ConsortiumDescription::local_testnet(7100, 8100);
    desc.authorities[0].nodes.push(NodeDescription {
        signing_member: true,
        ..extra
    });
    let dealt = deal(&desc, Timestamp(T0), &mut rng).expect("a signing member is not a validator");
    assert_eq!((dealt.genesis.consortium.n, dealt.genesis.consortium.f), (4, 1));
    // Made a validator by hand, the fault bound refuses it again.
    let mut g = dealt.genesis.clone();
    let member = g
        .nodes
        .iter()
        .position(|n| n.validator.is_none())
        .expect("member");
    g.nodes[member].validator = Some(4);
    g.consortium.n = 5;
    assert!(g.validate().is_err());

    let good = &fixture().dealt.genesis;
    // Rogue key: globe's BLS key set replaced by folio's, PoP left as is.
    let mut g = good.clone();
    g.authorities[0].bls.public_key_set = g.authorities[1].bls.public_key_set.clone();
    assert!(matches!(
        g.validate(),
        Err(GenesisError::BadProofOfPossession { .. })
    ));
    // PoP of another key.
    let mut g = good.clone();
    g.authorities[0].bls.proof_of_possession = g.authorities[1].bls.proof_of_possession.clone();
    assert!(matches!(
        g.validate(),
        Err(GenesisError::BadProofOfPossession { .. })
    ));
    // A PeerId that is not the node key's.
    let mut g = good.clone();
    g.nodes[1].peer_id = g.nodes[2].peer_id.clone();
    assert!(matches!(g.validate(), Err(GenesisError::Node { .. })));
    // Wrong f.
    let mut g = good.clone();
    g.consortium.f = 0;
    assert!(matches!(g.validate(), Err(GenesisError::Consortium(_))));
    // No operator.
    let mut g = good.clone();
    g.authorities[3].role = Role::DataSource;
    assert!(matches!(
        g.validate(),
        Err(GenesisError::MissingRole(Role::Operator))
    ));
    // A key file whose secrets are another node's is refused.
    let f = fixture();
    let mut s = f.dealt.nodes[0].clone();
    s.authority.ed25519_secret = f.dealt.nodes[1].authority.ed25519_secret.clone();
    assert!(s.signers(&f.dealt.genesis, &f.dealt.keyring).is_err());
}

#[test]
fn peer_ids_are_libp2p_ed25519_identities() {
    for n in &fixture().dealt.genesis.nodes {
        assert!(n.peer_id.starts_with("12D3KooW"), "{}", n.peer_id);
    }
}

#[test]
fn genesis_refuses_consortium_parameters_no_consortium_could_run() {
    let g = fixture().dealt.genesis.clone();
    assert!(g.validate().is_ok());
    let bad = [
        ConsortiumParams {
            heartbeat_ms: 0,
            ..g.params
        },
        ConsortiumParams {
            view_timeout_ms: g.params.heartbeat_ms,
            ..g.params
        },
        ConsortiumParams {
            max_block_entries: 0,
            ..g.params
        },
        ConsortiumParams {
            max_block_bytes: 32 << 20,
            ..g.params
        },
        ConsortiumParams {
            pending_expiry_ms: 0,
            ..g.params
        },
    ];
    for params in bad {
        let mut h = g.clone();
        h.params = params;
        assert!(
            matches!(h.validate(), Err(GenesisError::Consortium(_))),
            "{params:?} was accepted"
        );
    }
}
