//! An authority of several nodes signs with t+1 of them, under every
//! scheme, and no node holds another's secret: one data-source authority
//! of three nodes signing 2-of-3 (one validator, two signing members).

mod common;

use std::collections::BTreeMap;

use common::*;
use provenance::crypto::{AuthorityShare, AuthoritySignature, SignatureError, SignatureScheme};
use provenance::genesis::{deal, ConsortiumDescription, Dealt, NodeDescription};
use provenance::{AuthorityId, Timestamp};
use rand::SeedableRng;

/// The testnet's four authorities, globe-press running three nodes that
/// sign 2-of-3: its first a validator, the other two signing members.
fn two_of_three() -> Dealt {
    let mut desc = ConsortiumDescription::local_testnet(7300, 8300);
    let globe = &mut desc.authorities[0];
    globe.threshold = Some(1);
    for i in 1..3u16 {
        globe.nodes.push(NodeDescription {
            name: format!("globe-{i}"),
            p2p_listen: format!("/ip4/127.0.0.1/tcp/{}", 7390 + i),
            api_listen: format!("127.0.0.1:{}", 8390 + i),
            signing_member: true,
            api_certificate: Default::default(),
        });
    }
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(23);
    deal(&desc, Timestamp(T0), &mut rng).expect("deals")
}

fn globe() -> AuthorityId {
    id("globe-press")
}

#[test]
fn authority_2_of_3_genesis_lists_one_validator_and_two_signing_members() {
    let d = two_of_three();
    let g = &d.genesis;
    // Four validators (one per authority); globe's members do not vote.
    assert_eq!((g.consortium.n, g.consortium.f, g.consortium.q), (4, 1, 3));
    let globe = globe();
    let nodes: Vec<_> = g.nodes_of(&globe).collect();
    assert_eq!(nodes.len(), 3);
    assert!(nodes[0].validator.is_some());
    assert!(nodes[1].validator.is_none() && nodes[2].validator.is_none());
    let a = g.authority(&globe).expect("globe");
    assert_eq!((a.bls.threshold, a.ed25519.len(), a.ml_dsa_65.len()), (1, 3, 3));
    // Members hold no consortium share; every node's keys check.
    for (n, s) in d.nodes.iter().zip(d.signers().expect("keys match genesis")) {
        assert_eq!(n.consortium_share.is_some(), s.validator.is_some(), "{}", n.node);
    }
}

#[test]
fn authority_2_of_3_genesis_refuses_two_nodes_with_the_same_key() {
    let d = two_of_three();
    for scheme in ["ed25519", "ml-dsa-65"] {
        let mut g = d.genesis.clone();
        let a = g.authorities.iter_mut().find(|a| a.id == globe()).expect("globe");
        match scheme {
            "ed25519" => a.ed25519[2] = a.ed25519[1].clone(),
            _ => a.ml_dsa_65[2] = a.ml_dsa_65[1].clone(),
        }
        assert!(
            matches!(
                g.validate(),
                Err(provenance::genesis::GenesisError::BadKey { .. })
            ),
            "{scheme}"
        );
    }
}

#[test]
fn authority_2_of_3_any_two_nodes_sign_for_it_under_every_scheme() {
    let d = two_of_three();
    let signers = d.signers().expect("signers");
    let globe_nodes: Vec<_> = signers
        .iter()
        .filter(|s| s.authority.authority() == &globe())
        .collect();
    let msg = b"a section message";
    for scheme in SignatureScheme::ALL {
        let shares: Vec<AuthorityShare> = globe_nodes
            .iter()
            .map(|s| s.authority.sign_share(scheme, msg).expect("share"))
            .collect();
        for pair in [[0, 1], [0, 2], [1, 2]] {
            let two = [shares[pair[0]].clone(), shares[pair[1]].clone()];
            let sig = d
                .keyring
                .combine_authority_shares(&globe(), scheme, msg, &two)
                .unwrap_or_else(|e| panic!("{scheme} {pair:?}: {e}"));
            d.keyring
                .verify(&sig, msg)
                .unwrap_or_else(|e| panic!("{scheme} {pair:?}: {e}"));
            assert!(d.keyring.verify(&sig, b"another message").is_err(), "{scheme}");
        }
        // All three: still the authority's signature (t+1 of them kept).
        let sig = d
            .keyring
            .combine_authority_shares(&globe(), scheme, msg, &shares)
            .expect("three combine");
        d.keyring.verify(&sig, msg).expect("verifies");
    }
}

#[test]
fn authority_2_of_3_one_node_alone_cannot_make_its_authority_signature_under_any_scheme() {
    let d = two_of_three();
    let signers = d.signers().expect("signers");
    let keys = d.keyring.authority(&globe()).expect("globe");
    let msg = b"a manifest registration";
    for node in signers.iter().filter(|s| s.authority.authority() == &globe()) {
        for scheme in SignatureScheme::ALL {
            // The signer refuses to sign alone.
            assert!(
                matches!(
                    node.authority.sign(scheme, msg),
                    Err(SignatureError::ThresholdKey { threshold: 1, .. })
                ),
                "{} {scheme}",
                node.node
            );
            let share = node.authority.sign_share(scheme, msg).expect("share");
            // One share does not combine, nor does the same share twice.
            for shares in [vec![share.clone()], vec![share.clone(), share.clone()]] {
                assert!(
                    matches!(
                        d.keyring.combine_authority_shares(&globe(), scheme, msg, &shares),
                        Err(SignatureError::NotEnoughShares { have: 1, need: 2, .. })
                    ),
                    "{} {scheme}",
                    node.node
                );
            }
            // Whatever this node puts together from its own key material
            // does not verify as the authority's: its share as the whole
            // signature, its share laid out as one node's part, or its
            // share twice under two indexes.
            let mut one_part = share.index.to_be_bytes().to_vec();
            one_part.extend_from_slice(&share.share.0);
            let mut twice = Vec::new();
            for i in [0u16, 1] {
                twice.extend_from_slice(&i.to_be_bytes());
                twice.extend_from_slice(&share.share.0);
            }
            let mut as_other = Vec::new();
            for i in [share.index, (share.index + 1) % 3]
                .iter()
                .copied()
                .collect::<std::collections::BTreeSet<_>>()
            {
                as_other.extend_from_slice(&i.to_be_bytes());
                as_other.extend_from_slice(&share.share.0);
            }
            for bytes in [share.share.0.clone(), one_part, twice, as_other] {
                let forged = AuthoritySignature {
                    authority: globe(),
                    scheme,
                    key: keys.key_id(scheme),
                    signature: bytes.into(),
                };
                assert!(
                    d.keyring.verify(&forged, msg).is_err(),
                    "{} alone made a {scheme} signature of its authority",
                    node.node
                );
            }
        }
    }
}

#[test]
fn authority_2_of_3_a_bad_or_foreign_share_is_named_not_combined() {
    let d = two_of_three();
    let signers = d.signers().expect("signers");
    let globe_nodes: Vec<_> = signers
        .iter()
        .filter(|s| s.authority.authority() == &globe())
        .collect();
    let folio = signers
        .iter()
        .find(|s| s.authority.authority() == &id("folio-society"))
        .expect("folio");
    let msg = b"m";
    for scheme in SignatureScheme::ALL {
        let a = globe_nodes[0].authority.sign_share(scheme, msg).expect("share");
        let mut b = globe_nodes[1].authority.sign_share(scheme, msg).expect("share");
        b.share.0[5] ^= 1;
        assert!(
            matches!(
                d.keyring
                    .combine_authority_shares(&globe(), scheme, msg, &[a.clone(), b]),
                Err(SignatureError::BadShare { index: 1, .. })
            ),
            "{scheme}"
        );
        // Another authority's node claiming one of globe's indexes.
        let mut foreign = folio.authority.sign_share(scheme, msg).expect("share");
        foreign.authority = globe();
        foreign.index = 2;
        assert!(
            d.keyring
                .combine_authority_shares(&globe(), scheme, msg, &[a, foreign])
                .is_err(),
            "{scheme}"
        );
    }
}

#[test]
fn authority_2_of_3_no_secret_key_material_is_identical_across_nodes() {
    let d = two_of_three();
    let mut seen: BTreeMap<Vec<u8>, String> = BTreeMap::new();
    for n in &d.nodes {
        let mut secrets = vec![
            ("node_secret", n.node_secret.0.clone()),
            ("bls_share", n.authority.bls_share.0.clone()),
            ("ed25519_secret", n.authority.ed25519_secret.0.clone()),
            ("ml_dsa_seed", n.authority.ml_dsa_seed.0.clone()),
        ];
        secrets.extend(
            n.consortium_share
                .iter()
                .map(|c| ("consortium_share", c.0.clone())),
        );
        for (what, bytes) in secrets {
            assert_eq!(bytes.len(), 32, "{} {what}", n.node);
            if let Some(other) = seen.insert(bytes, format!("{} {what}", n.node)) {
                panic!("{} {what} is the same as {other}", n.node);
            }
        }
    }
    assert_eq!(seen.len(), 6 * 4 + 4, "six nodes, four validators");
}

#[test]
fn authority_2_of_3_registrations_are_signed_under_the_scheme_the_authority_declares() {
    let mut desc = ConsortiumDescription::local_testnet(7400, 8400);
    desc.authorities[0].scheme = SignatureScheme::Ed25519;
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(5);
    let d = deal(&desc, Timestamp(T0), &mut rng).expect("deals");
    let signers = d.signers().expect("signers");
    let m = manifest("globe-press");
    let body = provenance::EntryBody::Manifest(m);
    let view = provenance::MemoryLedgerView::default();
    let plan = body.signing_plan(&view).expect("plan");
    let request = &plan.requests[0];
    for scheme in SignatureScheme::ALL {
        let sig = signers[0]
            .authority
            .sign(scheme, &request.message)
            .expect("t = 0 signs");
        let mut co =
            provenance::crypto::CoSigner::new(&d.keyring, scheme, plan.requests.clone()).expect("co");
        co.add(sig).expect("verifies as a signature");
        let cosig = co.finish().expect("assembles");
        let verdict = provenance::crypto::verify_cosignature(&d.keyring, plan.scheme, &plan.requests, &cosig);
        if scheme == SignatureScheme::Ed25519 {
            verdict.expect("the declared scheme");
        } else {
            assert!(
                matches!(
                    verdict,
                    Err(SignatureError::WrongScheme {
                        expected: SignatureScheme::Ed25519,
                        ..
                    })
                ),
                "{scheme}: {verdict:?}"
            );
        }
    }
}
