//! Replay audits over a real campaign on the tiny model, with the demo
//! consortium's fixed keys: governance and each data source sign a ticket
//! for every training record, replay the records their tickets select
//! (`tuner::auditor`) and refuse one whose replay differs; a refusal is
//! kept as evidence. The co-signers here are in-process (the sink plays
//! them), with the same decisions a node makes.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use provenance::audit::{audit_faults, AuditPolicy, AuditedRecord, ALWAYS};
use provenance::*;
use tuner::auditor::{AuditingSink, Failure};
use tuner::campaign::{CampaignSpec, Session, SimClock, Stop};
use tuner::cheat::{set_plan, Mode, Plan, When};
use tuner::demo::build;
use tuner::sink::{MemorySink, Verdict};

/// The policy's tolerance for a data source's replay: bf16 storage rounds
/// by at most 2^-9; twice that.
const TOLERANCE: f32 = 0.004;

/// A campaign of step events (batch 4, four sources of two authorities,
/// clipping that binds) under audit rate `rate`.
fn setup(rate: u32, steps: u64) -> (CampaignSpec, AuditingSink) {
    setup_with(rate, steps, EventGranularity::Batch, 4, 4000)
}

fn setup_with(
    rate: u32,
    steps: u64,
    granularity: EventGranularity,
    sources: usize,
    bytes: usize,
) -> (CampaignSpec, AuditingSink) {
    setup_clipped(rate, steps, granularity, sources, bytes, 0.05)
}

fn setup_clipped(
    rate: u32,
    steps: u64,
    granularity: EventGranularity,
    sources: usize,
    bytes: usize,
    clip_norm: f32,
) -> (CampaignSpec, AuditingSink) {
    let mut p = policy(RoutingGranularity::Head, granularity);
    for d in &mut p.depth {
        d.clip_norm = clip_norm;
    }
    p.audit = AuditPolicy {
        rate_millionths: rate,
        example_tolerance: TOLERANCE,
    };
    let mut cfg = config(sources, bytes, 1, p);
    cfg.settings.max_steps = steps;
    cfg.settings.epochs = 100;
    cfg.settings.batch_size = 4;
    let w = build(&cfg, &mut MemorySink::default(), &mut |_, _| {}).expect("built");
    let auditing = AuditingSink::new(&w.spec, w.consortium).expect("co-signers");
    (w.spec, auditing)
}

fn clock() -> Box<SimClock> {
    Box::new(SimClock {
        next: T0 + 100_000,
        step_ms: 10,
    })
}

/// Runs the session to its end; after each refusal (the session back at
/// step `k`, its last committed one) `on_refusal(k)` names a step the
/// cheater stops cheating at, if any. Returns every stop.
fn run_to_end(
    spec: CampaignSpec,
    sink: &mut AuditingSink,
    mut plan: Plan,
    mut on_refusal: impl FnMut(u64) -> Option<u64>,
) -> Vec<Stop> {
    set_plan(Some(plan.clone()));
    let (mut s, v) = Session::open(spec, clock(), sink).expect("opens");
    assert_eq!(v, Verdict::Committed);
    let mut stops = Vec::new();
    loop {
        let stop = s.run(sink, &mut ()).expect("runs");
        let refused = matches!(stop, Stop::CoSignerRefused { .. });
        stops.push(stop);
        if !refused {
            break;
        }
        if let Some(spare) = on_refusal(s.next_step()) {
            plan.spare.insert(spare);
            set_plan(Some(plan.clone()));
        }
        assert!(
            stops.len() < 1_000,
            "the run does not end: {:?}",
            sink.failures.iter().rev().take(3).collect::<Vec<_>>()
        );
    }
    set_plan(None);
    stops
}

/// The 99.9 % two-sided binomial interval of a count of `n` draws at `p`.
fn interval(n: usize, p: f64) -> (f64, f64) {
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    (n as f64 * p - 3.29 * sd, n as f64 * p + 3.29 * sd)
}

fn governance() -> AuthorityId {
    AuthorityId::new("standards-board").expect("id")
}

#[test]
fn replay_audit_at_rate_1_each_replay_only_cheat_is_refused_on_its_first_cheating_step() {
    for (mode, by) in [
        (Mode::NoClip, vec!["standards-board"]),
        (Mode::ForgeSketch, vec!["standards-board", "the example's source"]),
        (Mode::HideSignal, vec!["standards-board"]),
    ] {
        let (spec, mut sink) = setup(ALWAYS, 6);
        let plan = Plan {
            modes: vec![mode],
            step: 3,
            when: When::At,
            spare: BTreeSet::new(),
        };
        let stops = run_to_end(spec, &mut sink, plan, Some);
        assert!(
            matches!(&stops[0], Stop::CoSignerRefused { reason, .. } if reason.contains("standards-board: replay audit")),
            "{mode:?}: {stops:?}"
        );
        // Refused at its first cheating step (position 3), never before,
        // then the honest re-offer commits.
        assert!(
            sink.failures.iter().all(|f| f.seq == 3),
            "{mode:?}: {:?}",
            sink.failures
        );
        let who: BTreeSet<&AuthorityId> = sink.failures.iter().map(|f| &f.auditor).collect();
        assert!(who.contains(&governance()), "{mode:?}");
        if by.len() == 2 {
            assert_eq!(
                who.len(),
                2,
                "the forged example's own source catches it too: {:?}",
                sink.failures
            );
        } else {
            assert_eq!(
                who.len(),
                1,
                "{mode:?}: only governance can see it: {:?}",
                sink.failures
            );
        }
        assert_eq!(sink.audits.len(), 6, "{mode:?}: six records committed");
        // At rate 1 every auditor replayed every committed record.
        assert!(sink
            .audits
            .values()
            .all(|(_, a)| a.iter().all(|x| x.replay.is_some())));
    }
}

/// A step whose honest record states no memorisation signal (the loss
/// dropped less on its examples than on the probe, nothing extracted, no
/// canary): hiding the signals there still states less than was measured,
/// and governance's replay refuses it. (On the testnet, where the order
/// follows the chain and clipping at 0.001 keeps steps small, such a step
/// came up at the cheat step and the cheat changed nothing.)
#[test]
fn replay_audit_hiding_the_signals_of_a_step_that_shows_none_is_still_refused() {
    let quiet_setup = || setup_clipped(ALWAYS, 16, EventGranularity::Batch, 4, 4000, 0.001);
    let (spec, mut sink) = quiet_setup();
    let honest = Plan {
        modes: Vec::new(),
        step: 0,
        when: When::At,
        spare: BTreeSet::new(),
    };
    run_to_end(spec, &mut sink, honest, |_| None);
    let quiet: Vec<u64> = sink
        .log
        .entries
        .iter()
        .filter_map(|e| match e {
            EntryBody::Step(s) if s.measurement.signals == MemorisationSignals::default() => Some(s.step),
            _ => None,
        })
        .collect();
    let Some(&k) = quiet.iter().find(|&&k| k > 0) else {
        panic!("no step of the honest campaign states zero signals: the test needs one");
    };
    let (spec, mut sink) = quiet_setup();
    let plan = Plan {
        modes: vec![Mode::HideSignal],
        step: k,
        when: When::At,
        spare: BTreeSet::new(),
    };
    let stops = run_to_end(spec, &mut sink, plan, Some);
    assert!(
        matches!(&stops[0], Stop::CoSignerRefused { reason, .. } if reason.contains("standards-board: replay audit")),
        "hiding at quiet step {k}: {stops:?}"
    );
    assert!(sink.failures.iter().all(|f| f.seq == k), "{:?}", sink.failures);
}

/// Checks the committed audits: exactly the ticketed ones replayed, all
/// valid; returns how many records governance replayed.
fn check_audits(sink: &AuditingSink, rate: u32) -> usize {
    let kr = &sink.consortium.keyring;
    let mut governance_audited = 0;
    for (seq, (body_digest, audits)) in &sink.audits {
        let body = sink
            .log
            .entries
            .iter()
            .find(|b| b.digest() == *body_digest)
            .expect("committed");
        let auditors = sink.auditors_of(body);
        let record = AuditedRecord {
            campaign: &sink.campaign,
            seq: *seq,
            body: body_digest,
            rate_millionths: rate,
            auditors: &auditors,
        };
        assert_eq!(audit_faults(kr, &record, audits), vec![], "record {seq}");
        for a in audits {
            assert_eq!(a.replay.is_some(), a.ticket.selects(rate));
            if a.ticket.authority == governance() && a.replay.is_some() {
                governance_audited += 1;
            }
        }
    }
    // A missing replay record is named.
    if let Some((seq, (d, audits))) = sink
        .audits
        .iter()
        .find(|(_, (_, a))| a.iter().any(|x| x.replay.is_some()))
    {
        let mut cut = audits.clone();
        if let Some(x) = cut.iter_mut().find(|x| x.replay.is_some()) {
            x.replay = None;
        }
        let body = sink
            .log
            .entries
            .iter()
            .find(|b| b.digest() == *d)
            .expect("committed");
        let auditors = sink.auditors_of(body);
        let record = AuditedRecord {
            campaign: &sink.campaign,
            seq: *seq,
            body: d,
            rate_millionths: rate,
            auditors: &auditors,
        };
        assert!(matches!(
            &audit_faults(kr, &record, &cut)[..],
            [provenance::audit::AuditFault::Unaudited { .. }]
        ));
    }
    governance_audited
}

#[test]
fn replay_audit_over_200_steps_audits_the_ticketed_steps_and_catches_a_guessing_cheater_when_audited() {
    for rate in [500_000u32, 100_000] {
        let (spec, mut sink) = setup(rate, 200);
        // It skips clipping on the steps it guesses are not audited, and
        // gives a position up after one refusal.
        let plan = Plan {
            modes: vec![Mode::NoClip],
            step: 0,
            when: When::Guess,
            spare: BTreeSet::new(),
        };
        let stops = run_to_end(spec, &mut sink, plan, Some);
        assert_eq!(stops.last(), Some(&Stop::Finished));
        let n = sink.audits.len();
        assert!(n >= 190, "{n} records committed");
        let audited = check_audits(&sink, rate);
        let p = f64::from(rate) / f64::from(ALWAYS);
        let (lo, hi) = interval(n, p);
        assert!(
            lo <= audited as f64 && audited as f64 <= hi,
            "rate {rate}: governance replayed {audited} of {n}, not in [{lo:.1}, {hi:.1}]"
        );
        // Every cheating first offer is caught exactly when governance's
        // ticket selects its position.
        let gov = sink.signer(&governance()).expect("governance");
        let cheated: Vec<u64> = (0..n as u64)
            .filter(|s| tuner::cheat::guessed_unaudited(*s))
            .collect();
        let mut caught = 0;
        for &step in &cheated {
            let seq = step; // one record per step, no refusals of other kinds
            let selected = provenance::audit::AuditTicket::sign(gov, &sink.campaign, seq)
                .expect("ticket")
                .selects(rate);
            let refused = sink.failures.iter().any(|f| f.seq == seq);
            assert_eq!(
                refused, selected,
                "position {seq}: refused {refused}, selected {selected}"
            );
            caught += usize::from(refused);
        }
        let (lo, hi) = interval(cheated.len(), p);
        assert!(
            lo <= caught as f64 && caught as f64 <= hi,
            "rate {rate}: {caught} of {} cheating steps caught, not in [{lo:.1}, {hi:.1}]",
            cheated.len()
        );
        eprintln!(
            "rate {rate}: {n} records, governance replayed {audited}; {caught} of {} cheating steps caught",
            cheated.len()
        );
    }
}

#[test]
fn replay_audit_a_re_offering_cheater_is_refused_at_every_audited_position() {
    let rate = 500_000;
    let (spec, mut sink) = setup(rate, 24);
    let (spec_sources, spec_policy) = (spec.sources.clone(), spec.policy.clone());
    let plan = Plan {
        modes: vec![Mode::ForgeSketch, Mode::Vary],
        step: 0,
        when: When::Every,
        spare: BTreeSet::new(),
    };
    // Three varied re-offers of each refused position, then honesty.
    let mut tries: BTreeMap<u64, u32> = BTreeMap::new();
    run_to_end(spec, &mut sink, plan, |step| {
        let t = tries.entry(step).or_default();
        *t += 1;
        (*t >= 3).then_some(step)
    });
    let mut audited_positions = 0;
    for seq in sink.audits.keys() {
        let failed: Vec<&Failure> = sink.failures.iter().filter(|f| f.seq == *seq).collect();
        let distinct: BTreeSet<Digest> = failed.iter().map(|f| f.body).collect();
        if !failed.is_empty() {
            audited_positions += 1;
            assert_eq!(
                distinct.len(),
                3,
                "position {seq}: three varied offers, each refused: {failed:?}"
            );
            assert!(failed.iter().all(|f| f.reason.contains("sketch")), "{failed:?}");
        }
    }
    // Positions where the governance ticket selects were all refused.
    let gov = sink.signer(&governance()).expect("governance");
    for seq in sink.audits.keys() {
        let selected = provenance::audit::AuditTicket::sign(gov, &sink.campaign, *seq)
            .expect("ticket")
            .selects(rate);
        if selected {
            assert!(
                sink.failures.iter().any(|f| f.seq == *seq),
                "position {seq} is audited by governance"
            );
        }
    }
    assert!(audited_positions > 0);
    // Every failed audit is in the log as evidence that stands on its own:
    // the operator's signature over the refused body, the auditor's
    // selecting ticket.
    let evidence: Vec<&provenance::audit::AuditFailure> = sink
        .log
        .entries
        .iter()
        .filter_map(|e| match e {
            EntryBody::AuditFailure(f) => Some(f),
            _ => None,
        })
        .collect();
    assert_eq!(evidence.len(), sink.failures.len());
    let mut view = MemoryLedgerView::default();
    for e in &sink.log.entries {
        view.apply(e);
    }
    // The consortium's sources and policy, as the ledger holds them.
    for s in &spec_sources {
        view.apply(&EntryBody::Manifest(s.manifest.clone()));
    }
    view.apply(&EntryBody::Policy(spec_policy.clone()));
    for (f, e) in sink.failures.iter().zip(&evidence) {
        let link = e.record.chain_link().expect("a training record");
        assert_eq!(
            (link.seq, e.record.digest(), &e.auditor),
            (f.seq, f.body, &f.auditor)
        );
        e.verify_evidence(&sink.consortium.keyring, &view)
            .expect("the evidence stands");
    }
}

#[test]
fn replay_audit_composite_records_are_replayed_step_by_step() {
    // One composite record per epoch: two sources of 1,000 bytes (about 30
    // windows) in batches of 4, so about 8 steps per record.
    let (spec, mut sink) = setup_with(ALWAYS, 24, EventGranularity::Epoch, 2, 1000);
    let honest = Plan {
        modes: Vec::new(),
        step: 0,
        when: When::At,
        spare: BTreeSet::new(),
    };
    let stops = run_to_end(spec, &mut sink, honest, Some);
    assert_eq!(stops, vec![Stop::Finished]);
    assert!(sink.failures.is_empty(), "{:?}", sink.failures);
    let composites: Vec<&EntryBody> = sink
        .log
        .entries
        .iter()
        .filter(|b| matches!(b, EntryBody::Composite(c) if c.last_step > c.first_step))
        .collect();
    assert!(composites.len() >= 2, "multi-step composite records");
    assert!(sink
        .audits
        .values()
        .all(|(_, a)| !a.is_empty() && a.iter().all(|x| x.replay.is_some())));
    check_audits(&sink, ALWAYS);

    // An unclipped step in the middle of a record: governance names the
    // first recomputed quantity it changed (the next step's sketches).
    let (spec, mut sink) = setup_with(ALWAYS, 24, EventGranularity::Epoch, 2, 1000);
    let cheat = Plan {
        modes: vec![Mode::NoClip],
        step: 3,
        when: When::At,
        spare: BTreeSet::new(),
    };
    let stops = run_to_end(spec, &mut sink, cheat, |_| Some(3));
    assert!(
        matches!(&stops[0], Stop::CoSignerRefused { reason, .. }
            if reason.contains("standards-board: replay audit") && reason.contains("replayed step 4: sketch")),
        "{stops:?}"
    );
    assert_eq!(stops.last(), Some(&Stop::Finished));
    assert!(
        sink.failures.iter().all(|f| f.auditor == governance()),
        "{:?}",
        sink.failures
    );
}
