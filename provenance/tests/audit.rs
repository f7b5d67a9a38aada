//! Replay-audit tickets with the fixture's fixed keys: unique per position,
//! unforgeable, selecting the share the policy asks for, and the check that
//! names a missing, forged, unselected or unsigned audit.

mod common;

use common::*;
use provenance::audit::{
    audit_faults, Audit, AuditFault, AuditPolicy, AuditTicket, AuditedRecord, Replayed, ALWAYS,
};
use provenance::{AuthorityId, Canonical, DecodeError, Digest, EntryBody, EntryError, LedgerEntry};

fn signer(id: &str) -> &'static provenance::AuthoritySigner {
    &fixture().signer(id).authority
}

fn aid(s: &str) -> AuthorityId {
    AuthorityId::new(s).expect("id")
}

const CAMPAIGN: Digest = Digest([3; 32]);

/// The 99.9 % two-sided binomial interval of the count of `n` draws at `p`
/// (normal approximation, z = 3.29).
fn interval(n: u64, p: f64) -> (f64, f64) {
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    (n as f64 * p - 3.29 * sd, n as f64 * p + 3.29 * sd)
}

#[test]
fn a_ticket_is_unique_per_position_and_deterministic() {
    let s = signer("globe-press");
    let a = AuditTicket::sign(s, &CAMPAIGN, 5).expect("ticket");
    let b = AuditTicket::sign(s, &CAMPAIGN, 5).expect("ticket");
    assert_eq!(a, b, "a re-offer of a position gets the same ticket");
    let c = AuditTicket::sign(s, &CAMPAIGN, 6).expect("ticket");
    assert_ne!(a.signature, c.signature);
    let d = AuditTicket::sign(s, &Digest([4; 32]), 5).expect("ticket");
    assert_ne!(a.signature, d.signature);
    let kr = fixture().keyring();
    a.verify(kr, &CAMPAIGN, 5).expect("verifies");
    assert!(matches!(
        a.verify(kr, &CAMPAIGN, 6),
        Err(AuditFault::BadTicket { .. })
    ));
    // Another authority's signature under this authority's name.
    let forged = AuditTicket {
        authority: aid("globe-press"),
        signature: AuditTicket::sign(signer("folio-society"), &CAMPAIGN, 5)
            .expect("ticket")
            .signature,
    };
    assert!(matches!(
        forged.verify(kr, &CAMPAIGN, 5),
        Err(AuditFault::BadTicket { .. })
    ));
    let garbage = AuditTicket {
        authority: aid("globe-press"),
        signature: provenance::Bytes(vec![0xab; 96]),
    };
    assert!(matches!(
        garbage.verify(kr, &CAMPAIGN, 5),
        Err(AuditFault::BadTicket { .. })
    ));
}

#[test]
fn tickets_select_the_share_the_policy_asks_for() {
    let n = 2_000u64;
    for id in ["globe-press", "standards-board"] {
        let tickets: Vec<AuditTicket> = (0..n)
            .map(|seq| AuditTicket::sign(signer(id), &CAMPAIGN, seq).expect("ticket"))
            .collect();
        for rate in [100_000u32, 500_000] {
            let k = tickets.iter().filter(|t| t.selects(rate)).count() as f64;
            let (lo, hi) = interval(n, f64::from(rate) / f64::from(ALWAYS));
            assert!(
                lo <= k && k <= hi,
                "{id} at {rate}: {k} of {n} selected, not in [{lo}, {hi}]"
            );
        }
        // Nested: a record selected at 10 % is selected at 50 %.
        assert!(tickets.iter().all(|t| !t.selects(100_000) || t.selects(500_000)));
        assert!(tickets.iter().all(|t| t.selects(ALWAYS) && !t.selects(0)));
    }
    // Two auditors' selections are independent: both at 50 % about a quarter.
    let both = (0..n)
        .filter(|&seq| {
            AuditTicket::sign(signer("globe-press"), &CAMPAIGN, seq)
                .expect("t")
                .selects(500_000)
                && AuditTicket::sign(signer("folio-society"), &CAMPAIGN, seq)
                    .expect("t")
                    .selects(500_000)
        })
        .count() as f64;
    let (lo, hi) = interval(n, 0.25);
    assert!(lo <= both && both <= hi, "{both} of {n} selected by both");
}

fn audit(id: &str, seq: u64, body: &Digest, rate: u32) -> Audit {
    let ticket = AuditTicket::sign(signer(id), &CAMPAIGN, seq).expect("ticket");
    let replay = ticket
        .selects(rate)
        .then(|| Replayed::sign(signer(id), &CAMPAIGN, seq, body, Digest([9; 32])).expect("replay"));
    Audit { ticket, replay }
}

#[test]
fn the_check_names_each_missing_forged_or_unselected_audit() {
    let kr = fixture().keyring();
    let body = Digest([1; 32]);
    let auditors = [aid("globe-press"), aid("standards-board")];
    let rate = 500_000;
    // A position where globe-press's ticket selects and the board's does not.
    let seq = (0..64u64)
        .find(|&s| {
            AuditTicket::sign(signer("globe-press"), &CAMPAIGN, s)
                .expect("t")
                .selects(rate)
                && !AuditTicket::sign(signer("standards-board"), &CAMPAIGN, s)
                    .expect("t")
                    .selects(rate)
        })
        .expect("such a position among 64");
    let record = AuditedRecord {
        campaign: &CAMPAIGN,
        seq,
        body: &body,
        rate_millionths: rate,
        auditors: &auditors,
    };
    let honest = vec![
        audit("globe-press", seq, &body, rate),
        audit("standards-board", seq, &body, rate),
    ];
    assert!(honest[0].replay.is_some() && honest[1].replay.is_none());
    assert_eq!(audit_faults(kr, &record, &honest), vec![]);

    let gp = aid("globe-press");
    let sb = aid("standards-board");
    // The selected auditor's replay is missing.
    let mut a = honest.clone();
    a[0].replay = None;
    assert_eq!(
        audit_faults(kr, &record, &a),
        vec![AuditFault::Unaudited {
            authority: gp.clone()
        }]
    );
    // A replay where the ticket does not select.
    let mut a = honest.clone();
    a[1].replay = a[0].replay.clone();
    assert_eq!(
        audit_faults(kr, &record, &a),
        vec![AuditFault::Unselected {
            authority: sb.clone()
        }]
    );
    // A ticket missing.
    let a = vec![honest[0].clone()];
    assert_eq!(
        audit_faults(kr, &record, &a),
        vec![AuditFault::Missing {
            authority: sb.clone()
        }]
    );
    // A ticket of another position.
    let mut a = honest.clone();
    a[1].ticket = AuditTicket::sign(signer("standards-board"), &CAMPAIGN, seq + 1).expect("t");
    assert!(
        matches!(&audit_faults(kr, &record, &a)[..], [AuditFault::BadTicket { authority, .. }] if *authority == sb)
    );
    // A replay bound to another body (the record was re-offered changed).
    let mut a = honest.clone();
    a[0] = audit("globe-press", seq, &Digest([2; 32]), rate);
    assert!(
        matches!(&audit_faults(kr, &record, &a)[..], [AuditFault::BadReplay { authority, .. }] if *authority == gp)
    );
    // A replay whose digest was swapped after signing.
    let mut a = honest.clone();
    if let Some(r) = a[0].replay.as_mut() {
        r.digest = Digest([8; 32]);
    }
    assert!(matches!(
        &audit_faults(kr, &record, &a)[..],
        [AuditFault::BadReplay { .. }]
    ));
    // The operator is no auditor; a second ticket by one auditor is refused.
    let mut a = honest.clone();
    a.push(audit("tuning-lab", seq, &body, rate));
    a.push(honest[1].clone());
    assert_eq!(
        audit_faults(kr, &record, &a),
        vec![
            AuditFault::Unexpected {
                authority: aid("tuning-lab")
            },
            AuditFault::Unexpected { authority: sb },
        ]
    );
}

#[test]
fn a_policy_states_its_audit_rate_and_v1_is_refused() {
    let mut p = policy();
    p.audit = AuditPolicy {
        rate_millionths: 100_000,
        example_tolerance: 1e-3,
    };
    let back: provenance::PolicyArtifact = provenance::decode(&p.encode()).expect("decodes");
    assert_eq!(back.audit, p.audit);
    let mut over = p.clone();
    over.audit.rate_millionths = ALWAYS + 1;
    assert!(matches!(
        provenance::decode::<provenance::PolicyArtifact>(&over.encode()),
        Err(DecodeError::Invalid {
            field: "audit.rate_millionths",
            ..
        })
    ));
    let mut nan = p.clone();
    nan.audit.example_tolerance = f32::NAN;
    assert!(provenance::decode::<provenance::PolicyArtifact>(&nan.encode()).is_err());
    let mut old = p;
    old.version = 1;
    assert!(matches!(
        provenance::decode::<provenance::PolicyArtifact>(&old.encode()),
        Err(DecodeError::UnsupportedVersion { found: 1, .. })
    ));
}

/// A signed step event under a policy auditing half the records, with
/// every auditor's audit (a replay where its ticket selects).
fn audited_step() -> (World, LedgerEntry) {
    let mut p = policy();
    p.audit = AuditPolicy {
        rate_millionths: 500_000,
        example_tolerance: 0.004,
    };
    let w = world_with(p);
    let body = EntryBody::Step(w.step_event());
    let mut entry = sign_all(&body, &w.view, provenance::SignatureScheme::Bls12381);
    let ev = body.event().expect("an event");
    let (campaign, seq, digest) = (ev.link.campaign, ev.link.seq, body.digest());
    entry.audits = ["globe-press", "folio-society", "standards-board"]
        .iter()
        .map(|id| {
            let ticket = AuditTicket::sign(signer(id), &campaign, seq).expect("ticket");
            let replay = ticket.selects(500_000).then(|| {
                Replayed::sign(signer(id), &campaign, seq, &digest, Digest([9; 32])).expect("replay")
            });
            Audit { ticket, replay }
        })
        .collect();
    (w, entry)
}

#[test]
fn a_training_record_verifies_only_with_every_audit_its_tickets_call_for() {
    let kr = fixture().keyring();
    let (w, entry) = audited_step();
    let back: LedgerEntry = provenance::decode(&entry.encode()).expect("decodes");
    assert_eq!(back, entry);
    entry
        .verify(kr, &w.view)
        .expect("a fully audited record verifies");
    // Each audit left out in turn: a missing ticket or replay is named.
    for i in 0..entry.audits.len() {
        let mut cut = entry.clone();
        let who = cut.audits[i].ticket.authority.clone();
        let selected = cut.audits[i].replay.is_some();
        if selected {
            cut.audits[i].replay = None;
        } else {
            cut.audits.remove(i);
        }
        match cut.verify(kr, &w.view) {
            Err(EntryError::Audit(why)) => assert!(why.contains(who.as_str()), "{why}"),
            other => panic!("{who}'s audit removed (selected {selected}): {other:?}"),
        }
    }
    // No audits at all under an auditing policy.
    let mut none = entry.clone();
    none.audits.clear();
    assert!(matches!(none.verify(kr, &w.view), Err(EntryError::Audit(_))));
    // Audits under a policy that asks for none are refused too.
    let w0 = world();
    let body = EntryBody::Step(w0.step_event());
    let mut plain = sign_all(&body, &w0.view, provenance::SignatureScheme::Bls12381);
    plain
        .verify(kr, &w0.view)
        .expect("a record without audits under rate 0");
    plain.audits = entry.audits.clone();
    assert!(matches!(plain.verify(kr, &w0.view), Err(EntryError::Audit(_))));
    // Audits on anything but a training record do not decode.
    let mut m = sign_all(
        &EntryBody::Manifest(w.globe.clone()),
        &w.view,
        provenance::SignatureScheme::Bls12381,
    );
    m.audits = entry.audits.clone();
    assert!(matches!(
        provenance::decode::<LedgerEntry>(&m.encode()),
        Err(DecodeError::Invalid { field: "audits", .. })
    ));
    // A v1 entry (without audits) is refused.
    let mut old = entry;
    old.version = 1;
    assert!(matches!(
        provenance::decode::<LedgerEntry>(&old.encode()),
        Err(DecodeError::UnsupportedVersion { found: 1, .. })
    ));
}

#[test]
fn an_audit_failure_stands_as_evidence_only_with_the_operators_signature_and_a_selecting_ticket() {
    use provenance::audit::AuditFailure;
    use provenance::{Role, SignatureScheme, Timestamp};
    let kr = fixture().keyring();
    let mut p = policy();
    p.audit.rate_millionths = ALWAYS;
    let w = world_with(p);
    let step = w.step_event();
    let body = EntryBody::Step(step.clone());
    let (campaign, seq) = (step.link.campaign, step.link.seq);
    // The operator's signature its node gave the offer.
    let operator_signature = |b: &EntryBody| {
        let plan = b.signing_plan(&w.view).expect("plan");
        let op = plan
            .requests
            .iter()
            .find(|r| r.role == Role::Operator)
            .expect("operator");
        signer("tuning-lab")
            .sign(SignatureScheme::Bls12381, &op.message)
            .expect("signs")
    };
    let failure = AuditFailure {
        version: 1,
        record: Box::new(body.clone()),
        operator_signature: operator_signature(&body),
        auditor: aid("standards-board"),
        role: Role::Governance,
        ticket: AuditTicket::sign(signer("standards-board"), &campaign, seq)
            .expect("ticket")
            .signature,
        reason: "replayed block 2 delta: ... stated, ... found".into(),
        time: Timestamp(T0 + 200),
    };
    let sign = |f: &AuditFailure| {
        sign_all(
            &EntryBody::AuditFailure(f.clone()),
            &w.view,
            SignatureScheme::Bls12381,
        )
    };
    let entry = sign(&failure);
    let back: LedgerEntry = provenance::decode(&entry.encode()).expect("decodes");
    assert_eq!(back, entry);
    entry.verify(kr, &w.view).expect("the evidence stands");
    // Signed by the auditor alone, in its role.
    let plan = entry.body.signing_plan(&w.view).expect("plan");
    assert_eq!(plan.requests.len(), 1);
    assert_eq!(plan.requests[0].authority, aid("standards-board"));

    // Evidence that does not stand: a record other than the one the
    // operator signed; a ticket of another position; a signature by
    // someone other than the record's operator.
    let mut changed = step.clone();
    changed.measurement.loss += 1.0;
    let mut other = failure.clone();
    *other.record = EntryBody::Step(changed);
    assert!(matches!(
        sign(&other).verify(kr, &w.view),
        Err(EntryError::Audit(_))
    ));
    let mut other = failure.clone();
    other.ticket = AuditTicket::sign(signer("standards-board"), &campaign, seq + 1)
        .expect("ticket")
        .signature;
    assert!(matches!(
        sign(&other).verify(kr, &w.view),
        Err(EntryError::Audit(_))
    ));
    let mut other = failure.clone();
    other.operator_signature = signer("globe-press")
        .sign(SignatureScheme::Bls12381, &other.operator_signature.signature.0)
        .expect("signs");
    assert!(matches!(
        sign(&other).verify(kr, &w.view),
        Err(EntryError::Audit(_))
    ));
    // The operator's signature of another of its entries (its campaign)
    // cannot stand in: the record must be a training record.
    let mut framed = failure.clone();
    *framed.record = EntryBody::Campaign(w.campaign.clone());
    assert!(matches!(
        provenance::decode::<AuditFailure>(&framed.encode()),
        Err(DecodeError::Invalid { field: "record", .. })
    ));
    // An auditor claiming a role it does not hold is refused by the
    // signature rule; the operator cannot file one.
    let mut other = failure.clone();
    other.role = Role::DataSource;
    let e = EntryBody::AuditFailure(other);
    let plan = e.signing_plan(&w.view).expect("plan");
    assert!(matches!(
        provenance::crypto::verify_cosignature(kr, None, &plan.requests, &entry_cosig(&entry)),
        Err(provenance::SignatureError::WrongRole { .. })
    ));
    let mut op = failure;
    op.role = Role::Operator;
    assert!(matches!(
        provenance::decode::<AuditFailure>(&op.encode()),
        Err(DecodeError::Invalid { field: "role", .. })
    ));
}

fn entry_cosig(e: &LedgerEntry) -> provenance::CoSignature {
    match &e.attestation {
        provenance::Attestation::Authorities(c) => c.clone(),
        _ => panic!("an authority-signed entry"),
    }
}
