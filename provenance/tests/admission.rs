//! The admission evaluator: every refusal reason is reachable, checks run in
//! their documented order, and admitted examples get the policy's depth and
//! a routing mask that never exceeds it.

mod common;

use common::*;
use provenance::admission::{
    admit, admit_committed, block_within_depth, check_memorisation, manifest_sign_request, routing_mask,
    Admission, AdmissionContext,
};
use provenance::crypto::{CoSignature, SignatureScheme};
use provenance::*;

fn sign_manifest(m: &DataSourceManifest, by: &str, scheme: SignatureScheme) -> CoSignature {
    let req = manifest_sign_request(m);
    let sig = fixture()
        .signer(by)
        .authority
        .sign(scheme, &req.message)
        .expect("sign");
    match scheme {
        SignatureScheme::Bls12381 => {
            let pos = fixture()
                .keyring()
                .authority(&id(by))
                .expect("authority")
                .position;
            CoSignature::Bls {
                signers: provenance::crypto::SignerBitmap::from_positions(4, [pos]),
                aggregate: sig.signature,
            }
        }
        s => CoSignature::List {
            scheme: s,
            signatures: vec![sig],
        },
    }
}

fn run(
    m: &DataSourceManifest,
    sig: &CoSignature,
    policy: &PolicyArtifact,
    revocations: &[EffectiveRevocation],
    t: u64,
) -> Admission {
    let c = campaign(policy);
    let ctx = AdmissionContext {
        keyring: fixture().keyring(),
        policy,
        campaign: &c,
        revocations,
        time: Timestamp(t),
    };
    let a = admit(&ctx, m, sig);
    // A committed manifest's signature verified when its block did: the
    // rules alone give the same decision whenever the signature holds.
    if !matches!(
        &a,
        Admission::Refuse {
            reason: RefusalReason::BadSignature,
            ..
        }
    ) {
        assert_eq!(admit_committed(&ctx, m), a);
    }
    a
}

const NOW: u64 = T0 + 500;

#[test]
fn a_good_source_is_admitted_with_its_depth_and_routing() {
    let m = manifest("globe-press");
    for scheme in SignatureScheme::ALL {
        let sig = sign_manifest(&m, "globe-press", scheme);
        // A manifest is signed under the scheme its authority declares in
        // genesis (BLS here): any other is a bad signature.
        if scheme != SignatureScheme::Bls12381 {
            assert!(
                matches!(
                    run(&m, &sig, &policy(), &[], NOW),
                    Admission::Refuse {
                        reason: RefusalReason::BadSignature,
                        ..
                    }
                ),
                "{scheme}"
            );
            continue;
        }
        match run(&m, &sig, &policy(), &[], NOW) {
            Admission::Admit(d) => {
                assert_eq!(d.depth.max_depth, 1);
                assert_eq!(d.depth.clip_norm, 1.0);
                // 4 layers x (attention, MLP); depth 1 layer = the last two blocks.
                assert_eq!(d.routing.units, 8);
                let on: Vec<u32> = (0..8).filter(|&i| d.routing.allows(i)).collect();
                assert_eq!(on, vec![6, 7]);
            }
            other => panic!("{scheme}: {other:?}"),
        }
    }
}

#[test]
fn every_refusal_reason_is_reachable() {
    let m = manifest("globe-press");
    let sig = sign_manifest(&m, "globe-press", SignatureScheme::Bls12381);
    let p = policy();
    let reason = |a: Admission| a.refusal();

    // bad-signature: a forged signature, a signature by another data-source
    // authority, and a tampered manifest.
    let mut forged = sig.clone();
    match &mut forged {
        CoSignature::List { signatures, .. } => signatures[0].signature.0[0] ^= 1,
        CoSignature::Bls { aggregate, .. } => aggregate.0[5] ^= 1,
    }
    assert_eq!(
        reason(run(&m, &forged, &p, &[], NOW)),
        Some(RefusalReason::BadSignature)
    );
    let by_folio = sign_manifest(&m, "folio-society", SignatureScheme::Bls12381);
    assert_eq!(
        reason(run(&m, &by_folio, &p, &[], NOW)),
        Some(RefusalReason::BadSignature)
    );
    let mut tampered = m.clone();
    tampered.license = License::new("CC0-1.0").expect("l");
    assert_eq!(
        reason(run(&tampered, &sig, &p, &[], NOW)),
        Some(RefusalReason::BadSignature)
    );

    // revoked: effective before the step; a revocation effective later
    // does not apply yet (no backdating).
    let rev = EffectiveRevocation {
        source: m.source_id(),
        effective: Timestamp(NOW - 1),
    };
    assert_eq!(
        reason(run(&m, &sig, &p, &[rev], NOW)),
        Some(RefusalReason::Revoked)
    );
    let later = EffectiveRevocation {
        source: m.source_id(),
        effective: Timestamp(NOW + 1),
    };
    assert_eq!(reason(run(&m, &sig, &p, &[later], NOW)), None);

    // outside-validity-window: before not_before and at not_after.
    assert_eq!(
        reason(run(&m, &sig, &p, &[], T0 - 1)),
        Some(RefusalReason::OutsideValidityWindow)
    );
    assert_eq!(
        reason(run(&m, &sig, &p, &[], T0 + 1_000_000)),
        Some(RefusalReason::OutsideValidityWindow)
    );

    // license.
    let mut lic = m.clone();
    lic.license = License::new("LicenseRef-no-ai-training").expect("l");
    let lic_sig = sign_manifest(&lic, "globe-press", SignatureScheme::Bls12381);
    assert_eq!(
        reason(run(&lic, &lic_sig, &p, &[], NOW)),
        Some(RefusalReason::License)
    );

    // purpose: the source does not allow it, or the policy does not.
    let mut purp = m.clone();
    purp.purposes = vec![Purpose::new("commercial").expect("p")];
    let purp_sig = sign_manifest(&purp, "globe-press", SignatureScheme::Bls12381);
    assert_eq!(
        reason(run(&purp, &purp_sig, &p, &[], NOW)),
        Some(RefusalReason::Purpose)
    );
    let mut strict = p.clone();
    strict.admissible_purposes = vec![Purpose::new("safety-evaluation").expect("p")];
    assert_eq!(
        reason(run(&m, &sig, &strict, &[], NOW)),
        Some(RefusalReason::Purpose)
    );

    // depth: no rule for the class, or a zero-depth rule.
    let mut class = m.clone();
    class.data_class = DataClass::new("personal-correspondence").expect("c");
    let class_sig = sign_manifest(&class, "globe-press", SignatureScheme::Bls12381);
    assert_eq!(
        reason(run(&class, &class_sig, &p, &[], NOW)),
        Some(RefusalReason::Depth)
    );
    let mut zero = p.clone();
    zero.depth[0].max_depth = 0;
    assert_eq!(reason(run(&m, &sig, &zero, &[], NOW)), Some(RefusalReason::Depth));

    // memorisation: judged from a step's signals.
    let mut s = measurement().signals;
    assert_eq!(check_memorisation(&p, &s), None);
    s.canary_exposure = 11.0;
    assert!(check_memorisation(&p, &s).is_some_and(|d| d.contains("canary exposure")));
    s.canary_exposure = 0.0;
    s.extraction = 0.9;
    assert!(check_memorisation(&p, &s).is_some_and(|d| d.contains("extraction")));
    s.extraction = 0.0;
    s.loss_drop_z = 4.5;
    assert!(check_memorisation(&p, &s).is_some_and(|d| d.contains("z-score")));
    s.loss_drop_z = f32::NAN;
    assert!(check_memorisation(&p, &s).is_some(), "a NaN signal never passes");
}

#[test]
fn checks_run_in_the_documented_order() {
    // A source that is revoked, expired, badly licensed and of an unknown
    // class is refused for revocation, the first failing check.
    let mut m = manifest("globe-press");
    m.license = License::new("LicenseRef-x").expect("l");
    m.data_class = DataClass::new("unknown").expect("c");
    let sig = sign_manifest(&m, "globe-press", SignatureScheme::Bls12381);
    let rev = EffectiveRevocation {
        source: m.source_id(),
        effective: Timestamp(T0),
    };
    let a = run(&m, &sig, &policy(), &[rev], T0 + 2_000_000);
    assert_eq!(a.refusal(), Some(RefusalReason::Revoked));
    let a = run(&m, &sig, &policy(), &[], T0 + 2_000_000);
    assert_eq!(a.refusal(), Some(RefusalReason::OutsideValidityWindow));
    let a = run(&m, &sig, &policy(), &[], NOW);
    assert_eq!(a.refusal(), Some(RefusalReason::License));
}

#[test]
fn routing_masks_never_exceed_depth_at_any_granularity() {
    let shape = ModelShape { layers: 4, heads: 3 };
    for resolution in [DepthResolution::Layer, DepthResolution::Block] {
        for granularity in [
            RoutingGranularity::Block,
            RoutingGranularity::Layer,
            RoutingGranularity::Head,
        ] {
            let mut p = policy();
            p.depth_resolution = resolution;
            p.routing_granularity = granularity;
            for depth in 0..=8u16 {
                let mask = routing_mask(&p, shape, depth);
                let within = |b: u32| block_within_depth(resolution, shape, depth, b);
                for u in 0..mask.units {
                    let blocks: Vec<u32> = match granularity {
                        RoutingGranularity::Block => vec![u],
                        RoutingGranularity::Layer => vec![2 * u, 2 * u + 1],
                        RoutingGranularity::Head => {
                            let (l, j) = (u / 4, u % 4);
                            vec![if j < 3 { 2 * l } else { 2 * l + 1 }]
                        }
                    };
                    assert_eq!(
                        mask.allows(u),
                        blocks.iter().all(|&b| within(b)),
                        "{resolution:?} {granularity:?} depth {depth} unit {u}"
                    );
                }
            }
        }
    }
    // Block resolution, depth 1: only the last MLP.
    let mut p = policy();
    p.depth_resolution = DepthResolution::Block;
    let mask = routing_mask(&p, shape, 1);
    assert_eq!((0..8).filter(|&i| mask.allows(i)).collect::<Vec<_>>(), vec![7]);
}

#[test]
fn admission_is_deterministic() {
    let m = manifest("globe-press");
    let sig = sign_manifest(&m, "globe-press", SignatureScheme::MlDsa65);
    let a = run(&m, &sig, &policy(), &[], NOW);
    let b = run(&m, &sig, &policy(), &[], NOW);
    assert_eq!(a, b);
}

#[test]
fn source_examples_prove_membership_in_the_signed_root() {
    let m = manifest("globe-press");
    let ex = examples();
    for i in 0..ex.len() {
        let p = ex.proof(i).expect("proof");
        m.verify_example(i, &ex.hash(i).expect("hash"), &p.path)
            .expect("member");
        assert!(m.verify_example(i, &Digest([0; 32]), &p.path).is_err());
    }
    // Salt matters: the same text under another salt gives other hashes.
    let other = SourceExamples::build(TEXT, &m.segmentation, &[1; 32]).expect("cut");
    assert_ne!(other.root(), ex.root());
    // Segmentation errors are typed.
    assert!(Segmentation::Window { length: 0, stride: 1 }.cut(10).is_err());
    assert!(Segmentation::Boundaries {
        offsets: vec![0, 5, 5]
    }
    .cut(10)
    .is_err());
    assert!(Segmentation::Boundaries { offsets: vec![0, 11] }.cut(10).is_err());
    assert_eq!(
        Segmentation::Boundaries {
            offsets: vec![0, 4, 10]
        }
        .cut(10)
        .expect("cut"),
        vec![0..4, 4..10]
    );
    assert_eq!(
        Segmentation::Window { length: 4, stride: 3 }
            .cut(10)
            .expect("cut"),
        vec![0..4, 3..7, 6..10]
    );
}
