//! Canonical encoding: round trips and rejections (truncated, trailing,
//! wrong version, oversized, malformed) for every object.

mod common;

use common::*;
use proptest::prelude::*;
use provenance::codec::{decode, Canonical, DecodeError};
use provenance::crypto::SignatureScheme;
use provenance::event::composite_root;
use provenance::*;

fn samples() -> World {
    world()
}

fn composite(w: &World) -> CompositeEvent {
    let records = w.step_event().examples;
    CompositeEvent {
        version: 2,
        link: link(&w.campaign, 1),
        order: OrderSpan { start: 2, end: 10 },
        first_step: 1,
        last_step: 4,
        policy: w.policy.digest(),
        records_root: composite_root(&records),
        records,
        measurement: measurement(),
        sketch_blob: Digest([1; 32]),
        delta_blob: Digest([2; 32]),
        step_time: Timestamp(T0 + 200),
    }
}

fn refusal(w: &World) -> Refusal {
    Refusal {
        version: 2,
        link: link(&w.campaign, 2),
        order: OrderSpan { start: 10, end: 14 },
        step: 5,
        policy: w.policy.digest(),
        examples: vec![ExampleRef {
            source: w.globe.source_id(),
            index: 3,
            example_hash: Digest([3; 32]),
        }],
        reason: RefusalReason::Memorisation,
        detail: "canary exposure 12 exceeds threshold 10".into(),
        measurement: Some(measurement()),
        time: Timestamp(T0 + 300),
    }
}

fn aggregate(w: &World) -> RefusalAggregate {
    let mut counts = vec![
        RefusalCount {
            source: w.globe.source_id(),
            reason: RefusalReason::License,
            count: 4,
        },
        RefusalCount {
            source: w.folio.source_id(),
            reason: RefusalReason::Purpose,
            count: 2,
        },
    ];
    counts.sort_by_key(|c| (c.source, c.reason));
    RefusalAggregate {
        version: 2,
        link: link(&w.campaign, 3),
        order: OrderSpan { start: 0, end: 14 },
        policy: w.policy.digest(),
        first_step: 0,
        last_step: 9,
        counts,
        time: Timestamp(T0 + 400),
    }
}

fn close(w: &World) -> CampaignClose {
    let mut per_source = vec![
        SourceCount {
            source: w.globe.source_id(),
            admitted: 10,
            refused: 1,
        },
        SourceCount {
            source: w.folio.source_id(),
            admitted: 3,
            refused: 0,
        },
    ];
    per_source.sort_by_key(|c| c.source);
    CampaignClose {
        version: 2,
        campaign: w.campaign.digest(),
        head: Digest([9; 32]),
        entries: 4,
        steps: 10,
        per_source,
        final_state: Digest([8; 32]),
        order_end: 14,
        time: Timestamp(T0 + 500),
    }
}

fn revocation(w: &World) -> Revocation {
    Revocation {
        version: 1,
        authority: id("globe-press"),
        source: w.globe.source_id(),
        reason: "rights withdrawn".into(),
        requested: Timestamp(T0 + 600),
    }
}

fn checkpoint() -> Checkpoint {
    Checkpoint {
        version: 5,
        origin: "govtune-testnet".into(),
        size: 12,
        root: Digest([12; 32]),
        height: 4,
        time: Timestamp(1_764_000_000_000),
        index: Digest([9; 32]),
    }
}

/// Round trip, every prefix truncated, one trailing byte, a wrong version,
/// and the JSON form.
fn check_all<T: Canonical + PartialEq + std::fmt::Debug>(value: &T) {
    let bytes = value.encode();
    let back: T = decode(&bytes).expect("round trip");
    assert_eq!(&back, value);
    assert_eq!(back.encode(), bytes, "encoding is canonical");
    assert_eq!(back.digest(), value.digest());

    for cut in 0..bytes.len() {
        match decode::<T>(&bytes[..cut]) {
            Err(DecodeError::Truncated { .. }) => {}
            other => panic!(
                "{}: prefix of {cut}/{} bytes gave {other:?}",
                T::KIND.name(),
                bytes.len()
            ),
        }
    }
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(matches!(
        decode::<T>(&trailing),
        Err(DecodeError::TrailingBytes { extra: 1, .. })
    ));

    let mut newer = bytes.clone();
    newer[..2].copy_from_slice(&(T::VERSION + 1).to_be_bytes());
    assert!(matches!(
        decode::<T>(&newer),
        Err(DecodeError::UnsupportedVersion { found, .. }) if found == T::VERSION + 1
    ));

    let json = serde_json::to_string(value).expect("json");
    let from_json: T = serde_json::from_str(&json).expect("json back");
    assert_eq!(&from_json, value);
}

#[test]
fn every_object_round_trips_and_rejects_truncated_trailing_and_wrong_version() {
    let w = samples();
    check_all(&w.globe);
    check_all(&w.policy);
    check_all(&w.campaign);
    check_all(&close(&w));
    check_all(&w.step_event());
    check_all(&composite(&w));
    check_all(&refusal(&w));
    check_all(&aggregate(&w));
    check_all(&revocation(&w));
    check_all(&checkpoint());
    check_all(&fixture().dealt.genesis);
}

/// One body of every kind an authority signs, under the sample world.
fn signed_bodies(w: &World) -> Vec<EntryBody> {
    vec![
        EntryBody::Manifest(w.globe.clone()),
        EntryBody::Policy(w.policy.clone()),
        EntryBody::Campaign(w.campaign.clone()),
        EntryBody::CampaignClose(close(w)),
        EntryBody::Step(w.step_event()),
        EntryBody::Composite(composite(w)),
        EntryBody::Refusal(refusal(w)),
        EntryBody::RefusalAggregate(aggregate(w)),
        EntryBody::Revocation(revocation(w)),
    ]
}

#[test]
fn every_ledger_entry_variant_round_trips_and_checks_nested_versions() {
    let w = samples();
    let bodies = signed_bodies(&w);
    for body in bodies {
        let entry = sign_all(&body, &w.view, SignatureScheme::Bls12381);
        check_all(&entry);
        entry
            .verify(fixture().keyring(), &w.view)
            .expect("signed entry verifies");
    }
    let cp = LedgerEntry {
        version: LedgerEntry::VERSION,
        body: EntryBody::Checkpoint(checkpoint()),
        attestation: Attestation::Consortium(Bytes(vec![0; 96])),
        audits: Vec::new(),
    };
    check_all(&cp);

    // A nested object with an unknown version is refused even though the
    // envelope's version is right.
    let mut m = w.globe.clone();
    m.version = 9;
    let entry = LedgerEntry {
        version: LedgerEntry::VERSION,
        body: EntryBody::Manifest(m),
        attestation: Attestation::Consortium(Bytes(vec![0; 96])),
        audits: Vec::new(),
    };
    assert!(matches!(
        decode::<LedgerEntry>(&entry.encode()),
        Err(DecodeError::UnsupportedVersion {
            kind: "DataSourceManifest",
            found: 9,
            ..
        })
    ));
}

#[test]
fn oversized_fields_are_refused_for_every_object() {
    let w = samples();
    let long = "x".repeat(5000);
    let oversized = |r: Result<(), DecodeError>| matches!(r, Err(DecodeError::Oversized { .. }));

    let mut m = w.globe.clone();
    m.title = long.clone();
    assert!(oversized(decode::<DataSourceManifest>(&m.encode()).map(drop)));
    let mut p = w.policy.clone();
    p.admissible_purposes = vec![Purpose::new("research").expect("p"); 300];
    assert!(oversized(decode::<PolicyArtifact>(&p.encode()).map(drop)));
    let mut c = w.campaign.clone();
    c.name = long.clone();
    assert!(oversized(decode::<Campaign>(&c.encode()).map(drop)));
    let mut cl = close(&w);
    cl.per_source = (0..70_000u32)
        .map(|i| {
            let mut d = [0u8; 32];
            d[..4].copy_from_slice(&i.to_be_bytes());
            SourceCount {
                source: Digest(d),
                admitted: 0,
                refused: 0,
            }
        })
        .collect();
    assert!(oversized(decode::<CampaignClose>(&cl.encode()).map(drop)));
    let mut e = w.step_event();
    e.examples[0].proof = vec![Digest::ZERO; 65];
    assert!(oversized(decode::<StepEvent>(&e.encode()).map(drop)));
    let mut ce = composite(&w);
    ce.measurement.blocks = vec![ce.measurement.blocks[0].clone(); 5000];
    assert!(oversized(decode::<CompositeEvent>(&ce.encode()).map(drop)));
    let mut r = refusal(&w);
    r.detail = long.clone();
    assert!(oversized(decode::<Refusal>(&r.encode()).map(drop)));
    let mut a = aggregate(&w);
    a.counts = (0..70_000u32)
        .map(|i| {
            let mut d = [0u8; 32];
            d[..4].copy_from_slice(&i.to_be_bytes());
            RefusalCount {
                source: Digest(d),
                reason: RefusalReason::License,
                count: 1,
            }
        })
        .collect();
    assert!(oversized(decode::<RefusalAggregate>(&a.encode()).map(drop)));
    let mut rv = revocation(&w);
    rv.reason = long.clone();
    assert!(oversized(decode::<Revocation>(&rv.encode()).map(drop)));
    let mut cp = checkpoint();
    cp.origin = long.clone();
    assert!(oversized(decode::<Checkpoint>(&cp.encode()).map(drop)));
    let mut g = fixture().dealt.genesis.clone();
    g.consortium_name = long;
    assert!(oversized(decode::<Genesis>(&g.encode()).map(drop)));
}

#[test]
fn huge_length_prefixes_and_bad_values_are_typed_errors() {
    let w = samples();
    let bytes = w.globe.encode();
    // version (2) + authority string length prefix (8 bytes): claim 2^60.
    let mut huge = bytes.clone();
    huge[2..10].copy_from_slice(&(1u64 << 60).to_be_bytes());
    assert!(matches!(
        decode::<DataSourceManifest>(&huge),
        Err(DecodeError::TooLarge { .. } | DecodeError::Truncated { .. })
    ));
    // An invalid label (space in an authority id) is refused while parsing.
    let mut bad = w.globe.encode();
    let at = bad
        .windows(11)
        .position(|x| x == b"globe-press")
        .expect("id in bytes");
    bad[at + 5] = b' ';
    assert!(matches!(
        decode::<DataSourceManifest>(&bad),
        Err(DecodeError::Malformed { .. })
    ));
    // A non-finite loss is refused.
    let mut e = w.step_event();
    e.measurement.loss = f32::NAN;
    assert!(matches!(
        decode::<StepEvent>(&e.encode()),
        Err(DecodeError::Invalid { .. })
    ));
    // A composite whose root does not match its records is refused.
    let mut ce = composite(&w);
    ce.records_root = Digest::ZERO;
    assert!(matches!(
        decode::<CompositeEvent>(&ce.encode()),
        Err(DecodeError::Invalid {
            field: "records_root",
            ..
        })
    ));
    // A bad enum tag is malformed.
    let cp = LedgerEntry {
        version: LedgerEntry::VERSION,
        body: EntryBody::Checkpoint(checkpoint()),
        attestation: Attestation::Consortium(Bytes(vec![0; 96])),
        audits: Vec::new(),
    };
    let mut b = cp.encode();
    b[2..6].copy_from_slice(&77u32.to_be_bytes());
    assert!(matches!(
        decode::<LedgerEntry>(&b),
        Err(DecodeError::Malformed { .. })
    ));
    // Policy version rules.
    let mut p = w.policy.clone();
    p.policy_version = 2;
    assert!(matches!(
        decode::<PolicyArtifact>(&p.encode()),
        Err(DecodeError::Invalid {
            field: "supersedes",
            ..
        })
    ));
}

#[test]
fn composite_records_keep_their_own_inclusion_proofs() {
    let w = samples();
    let ce = composite(&w);
    for (i, r) in ce.records.iter().enumerate() {
        let proof = ce.record_proof(i as u64).expect("proof");
        CompositeEvent::verify_record(&ce.records_root, r, &proof).expect("verifies");
        let other = &ce.records[(i + 1) % ce.records.len()];
        assert!(CompositeEvent::verify_record(&ce.records_root, other, &proof).is_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = decode::<LedgerEntry>(&bytes);
        let _ = decode::<DataSourceManifest>(&bytes);
        let _ = decode::<StepEvent>(&bytes);
        let _ = decode::<Genesis>(&bytes);
    }

    #[test]
    fn mutated_entries_never_panic_and_never_decode_to_the_same_digest(pos in any::<usize>(), bit in 0u8..8) {
        let w = samples();
        let entry = sign_all(&EntryBody::Step(w.step_event()), &w.view, SignatureScheme::Ed25519);
        let mut bytes = entry.encode();
        let i = pos % bytes.len();
        bytes[i] ^= 1 << bit;
        if let Ok(e) = decode::<LedgerEntry>(&bytes) {
            prop_assert_ne!(e.encode(), entry.encode());
        }
    }
}

#[test]
fn an_object_over_the_size_limit_encodes_but_never_decodes() {
    let w = samples();
    let mut e = w.step_event();
    let mut r = e.examples[0].clone();
    r.proof = vec![Digest::ZERO; 64];
    e.examples = vec![r; 9_000];
    let bytes = e.encode();
    assert!(
        bytes.len() > provenance::codec::MAX_OBJECT_BYTES,
        "{} bytes",
        bytes.len()
    );
    assert!(matches!(
        decode::<StepEvent>(&bytes),
        Err(DecodeError::TooLarge { .. })
    ));
}

/// A view that records every lookup.
struct Recording<'a> {
    inner: &'a dyn LedgerView,
    asked: std::cell::RefCell<std::collections::BTreeSet<Digest>>,
}

impl LedgerView for Recording<'_> {
    fn source(&self, id: &Digest) -> Option<&DataSourceManifest> {
        self.asked.borrow_mut().insert(*id);
        self.inner.source(id)
    }
    fn policy(&self, id: &Digest) -> Option<&PolicyArtifact> {
        self.asked.borrow_mut().insert(*id);
        self.inner.policy(id)
    }
    fn campaign(&self, id: &Digest) -> Option<&Campaign> {
        self.asked.borrow_mut().insert(*id);
        self.inner.campaign(id)
    }
}

#[test]
fn references_list_every_object_the_signing_rule_reads() {
    let w = samples();
    let bodies = signed_bodies(&w);
    for body in bodies {
        let r = Recording {
            inner: &w.view,
            asked: Default::default(),
        };
        let named: Vec<_> = body
            .required_signers(&r)
            .expect("signers")
            .signers
            .iter()
            .map(|s| (s.authority.clone(), s.role))
            .collect();
        let listed: std::collections::BTreeSet<Digest> = body.references().into_iter().collect();
        // A referenced campaign brings its own policy (proved with it).
        let implied: std::collections::BTreeSet<Digest> = listed
            .iter()
            .filter_map(|d| w.view.campaign(d).map(|c| c.policy))
            .collect();
        let asked = r.asked.into_inner();
        assert!(
            asked.iter().all(|d| listed.contains(d) || implied.contains(d)),
            "{:?}: the rule read {asked:?}, references list {listed:?}",
            body.kind()
        );
        // The plan signs exactly the required signers, in order.
        let plan = body.signing_plan(&w.view).expect("plan");
        let who: Vec<_> = plan
            .requests
            .iter()
            .map(|q| (q.authority.clone(), q.role))
            .collect();
        assert_eq!(who, named);
    }
}
