//! The accounting of a campaign's order: an honest operator's records
//! pass; a skipped example, an inflated aggregate, another order, an
//! example accounted twice and a wrong stop are each refused by name.

use provenance::order::{Accounting, ConsideredSource, Order, OrderFault, OrderSeed, OrderSpan};
use provenance::*;

const A: Digest = Digest([0xa; 32]);
const B: Digest = Digest([0xb; 32]);

fn order(seed: u8) -> Order {
    let c = [
        ConsideredSource {
            source: A,
            examples: 5,
        },
        ConsideredSource {
            source: B,
            examples: 4,
        },
    ];
    Order::new(&c, OrderSeed(Digest([seed; 32]))).unwrap()
}

fn link(seq: u64) -> ChainLink {
    ChainLink {
        campaign: Digest([1; 32]),
        seq,
        prev: Digest::ZERO,
    }
}

fn record(source: Digest, index: u64) -> ExampleRecord {
    ExampleRecord {
        source,
        index,
        example_hash: Digest::ZERO,
        proof: Vec::new(),
        decision: AdmitDecision {
            depth: DepthProfile {
                max_depth: 1,
                clip_norm: 1.0,
            },
            routing: RoutingMask::from_fn(RoutingGranularity::Layer, 1, |_| true),
        },
    }
}

fn step(seq: u64, span: OrderSpan, examples: Vec<ExampleRecord>) -> EntryBody {
    EntryBody::Step(StepEvent {
        version: 2,
        link: link(seq),
        order: span,
        step: seq,
        policy: Digest::ZERO,
        examples,
        measurement: Measurement {
            blocks: Vec::new(),
            optimizer_state: Digest::ZERO,
            model_state: Digest::ZERO,
            loss: 0.0,
            signals: MemorisationSignals::default(),
        },
        sketch_blob: Digest::ZERO,
        delta_blob: Digest::ZERO,
        step_time: Timestamp(10),
    })
}

fn refusal(seq: u64, span: OrderSpan, examples: &[(Digest, u64)]) -> EntryBody {
    EntryBody::Refusal(Refusal {
        version: 2,
        link: link(seq),
        order: span,
        step: seq,
        policy: Digest::ZERO,
        examples: examples
            .iter()
            .map(|&(source, index)| ExampleRef {
                source,
                index,
                example_hash: Digest::ZERO,
            })
            .collect(),
        reason: RefusalReason::License,
        detail: String::new(),
        measurement: None,
        time: Timestamp(10),
    })
}

fn aggregate(seq: u64, span: OrderSpan, count: u64) -> EntryBody {
    EntryBody::RefusalAggregate(RefusalAggregate {
        version: 2,
        link: link(seq),
        order: span,
        policy: Digest::ZERO,
        first_step: 0,
        last_step: seq,
        counts: if count == 0 {
            Vec::new()
        } else {
            vec![RefusalCount {
                source: B,
                reason: RefusalReason::License,
                count,
            }]
        },
        time: Timestamp(10),
    })
}

fn close(order_end: u64) -> EntryBody {
    EntryBody::CampaignClose(CampaignClose {
        version: 2,
        campaign: Digest([1; 32]),
        head: Digest::ZERO,
        entries: 0,
        steps: 0,
        per_source: Vec::new(),
        final_state: Digest::ZERO,
        order_end,
        time: Timestamp(10),
    })
}

/// Source B is refused (license), A admitted.
fn reason_of(s: &Digest, _: Timestamp) -> Option<RefusalReason> {
    (*s == B).then_some(RefusalReason::License)
}

/// What an honest operator drawing batches of `batch` from `seed` with
/// refusal aggregation submits, for `batches` batches.
fn honest(seed: u8, batch: u64, batches: u64, aggregate_refusals: bool) -> (Vec<EntryBody>, u64) {
    let mut o = order(seed);
    let mut out = Vec::new();
    let mut seq = 0;
    for k in 0..batches {
        let span = OrderSpan {
            start: k * batch,
            end: (k + 1) * batch,
        };
        let drawn: Vec<(Digest, u64)> = (span.start..span.end)
            .map(|p| {
                let (s, i) = o.at(p);
                (o.sources()[s].source, i)
            })
            .collect();
        let refused: Vec<(Digest, u64)> = drawn.iter().copied().filter(|d| d.0 == B).collect();
        let admitted: Vec<ExampleRecord> = drawn
            .iter()
            .filter(|d| d.0 == A)
            .map(|d| record(d.0, d.1))
            .collect();
        if !refused.is_empty() && !aggregate_refusals {
            out.push(refusal(seq, span, &refused));
            seq += 1;
        }
        if !admitted.is_empty() {
            out.push(step(seq, span, admitted));
            seq += 1;
        }
        if aggregate_refusals {
            out.push(aggregate(seq, span, refused.len() as u64));
            seq += 1;
        }
    }
    out.push(close(batches * batch));
    (out, batches * batch)
}

fn run(records: &[EntryBody]) -> Result<(), (usize, OrderFault)> {
    let mut acc = Accounting::new(order(7));
    for (i, r) in records.iter().enumerate() {
        acc.record(r, &mut reason_of).map_err(|e| (i, e))?;
    }
    Ok(())
}

#[test]
fn an_honest_operators_records_account_for_every_position() {
    // Three batches of three: the first epoch; then into the second.
    for agg in [false, true] {
        let (records, _) = honest(7, 3, 5, agg);
        run(&records).unwrap_or_else(|e| panic!("aggregate {agg}: {e:?}"));
    }
}

#[test]
fn a_skipped_admissible_example_is_named_at_the_next_event() {
    let (mut records, _) = honest(7, 3, 3, false);
    // Drop one admitted example from the first event.
    let (i, dropped) = records
        .iter_mut()
        .enumerate()
        .find_map(|(i, r)| match r {
            EntryBody::Step(e) => Some((i, e.examples.remove(0))),
            _ => None,
        })
        .unwrap();
    let (at, fault) = run(&records).unwrap_err();
    assert_eq!(at, i);
    match fault {
        OrderFault::Skipped { source_id, index, .. } => {
            assert_eq!((source_id, index), (dropped.source, dropped.index))
        }
        f => panic!("{f}"),
    }
}

#[test]
fn an_inflated_aggregate_is_refused_with_both_counts() {
    let (mut records, _) = honest(7, 3, 3, true);
    let i = records
        .iter()
        .position(|r| matches!(r, EntryBody::RefusalAggregate(a) if !a.counts.is_empty()))
        .unwrap();
    if let EntryBody::RefusalAggregate(a) = &mut records[i] {
        a.counts[0].count += 1;
    }
    let (at, fault) = run(&records).unwrap_err();
    assert_eq!(at, i);
    assert!(
        matches!(fault, OrderFault::Miscounted { claimed, actual, .. } if claimed == actual + 1),
        "{fault}"
    );
}

#[test]
fn records_drawn_from_another_order_are_refused_at_the_first() {
    let (records, _) = honest(8, 3, 3, false);
    let (at, fault) = run(&records).unwrap_err();
    assert_eq!(at, 0, "{fault}");
    assert!(
        matches!(fault, OrderFault::NotInSpan { .. } | OrderFault::Skipped { .. }),
        "{fault}"
    );
}

#[test]
fn an_example_accounted_twice_or_a_wrong_stop_is_refused() {
    let (mut records, end) = honest(7, 3, 2, false);
    // Re-submit the first step's examples as a refusal of the same span.
    let first = records
        .iter()
        .find_map(|r| r.event().map(|e| (*e.order, e.records.to_vec())))
        .unwrap();
    let again: Vec<(Digest, u64)> = first.1.iter().map(|r| (r.source, r.index)).collect();
    let mut twice = records.clone();
    twice.insert(twice.len() - 1, refusal(99, first.0, &again));
    assert!(matches!(
        run(&twice).unwrap_err().1,
        OrderFault::BadSpan { .. } | OrderFault::Twice { .. }
    ));
    // A close naming another stop.
    let last = records.len() - 1;
    records[last] = close(end + 1);
    assert!(matches!(
        run(&records).unwrap_err().1,
        OrderFault::WrongStop { claimed, drawn } if claimed == end + 1 && drawn == end
    ));
}

#[test]
fn refusals_never_aggregated_fail_the_close_and_a_gap_is_a_skip() {
    let (records, _) = honest(7, 3, 3, true);
    // Drop every aggregate.
    let kept: Vec<EntryBody> = records
        .iter()
        .filter(|r| !matches!(r, EntryBody::RefusalAggregate(_)))
        .cloned()
        .collect();
    assert!(matches!(
        run(&kept).unwrap_err().1,
        OrderFault::Unaggregated { .. }
    ));
    // A record that starts beyond what was drawn skips the positions between.
    let mut acc = Accounting::new(order(7));
    let gap = step(0, OrderSpan { start: 3, end: 6 }, Vec::new());
    let before = format!("{acc:?}");
    assert!(matches!(
        acc.record(&gap, &mut reason_of),
        Err(OrderFault::Skipped { .. })
    ));
    assert_eq!(format!("{acc:?}"), before, "a refused record changes nothing");
}

#[test]
fn a_verifier_goes_on_past_a_fault_and_finds_the_next() {
    // A skipped example in the first event and an inflated aggregate later.
    let (mut records, _) = honest(7, 3, 3, true);
    let skipped = records
        .iter_mut()
        .find_map(|r| match r {
            EntryBody::Step(e) if e.examples.len() > 1 => Some(e.examples.remove(0)),
            _ => None,
        })
        .unwrap();
    let last_agg = records
        .iter()
        .rposition(|r| matches!(r, EntryBody::RefusalAggregate(a) if !a.counts.is_empty()))
        .unwrap();
    if let EntryBody::RefusalAggregate(a) = &mut records[last_agg] {
        a.counts[0].count += 1;
    }
    let mut acc = Accounting::new(order(7));
    let faults: Vec<(usize, OrderFault)> = records
        .iter()
        .enumerate()
        .flat_map(|(i, r)| acc.record_all(r, &mut reason_of).into_iter().map(move |f| (i, f)))
        .collect();
    assert_eq!(faults.len(), 2, "{faults:?}");
    assert!(
        matches!(&faults[0].1, OrderFault::Skipped { source_id, index, .. } if (*source_id, *index) == (skipped.source, skipped.index))
    );
    assert_eq!(faults[1].0, last_agg);
    assert!(matches!(faults[1].1, OrderFault::Miscounted { .. }));
}

#[test]
fn a_refusal_must_give_admissions_reason() {
    // An admissible example (source A) refused for its licence.
    let mut o = order(7);
    let source_at = |o: &mut Order, p: u64| {
        let s = o.at(p).0;
        o.sources()[s].source
    };
    let p = (0..9).find(|&p| source_at(&mut o, p) == A).unwrap();
    let (_, index) = o.at(p);
    let mut acc = Accounting::new(order(7));
    let fake = refusal(0, OrderSpan { start: p, end: p + 1 }, &[(A, index)]);
    assert!(matches!(
        acc.record(&fake, &mut reason_of),
        Err(OrderFault::WrongReason { actual: None, .. })
    ));
    // A source admission refuses, refused for its licence: accepted.
    let q = (0..9).find(|&q| source_at(&mut o, q) == B).unwrap();
    let (_, j) = o.at(q);
    let mut acc = Accounting::new(order(7));
    let ok = refusal(0, OrderSpan { start: q, end: q + 1 }, &[(B, j)]);
    assert_eq!(acc.record(&ok, &mut reason_of), Ok(()));
}

#[test]
fn check_answers_as_record_would_and_takes_nothing_in() {
    let (records, _) = honest(7, 3, 3, false);
    let mut acc = Accounting::new(order(7));
    for r in &records {
        let before = format!("{acc:?}");
        let checked = acc.check(r, &mut reason_of);
        assert_eq!(format!("{acc:?}"), before);
        assert_eq!(checked, acc.record(r, &mut reason_of));
    }
    // A record already taken in does not check again.
    let first = records.iter().find(|r| r.event().is_some()).unwrap();
    assert!(acc.check(first, &mut reason_of).is_err());
}
