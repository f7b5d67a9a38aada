//! Must-show: a unit routed in at step k and out at step k + 1 is
//! bit-identical across step k + 1, at every routing granularity, with
//! weight decay > 0 and non-zero optimizer moments.

mod common;

use common::*;
use provenance::*;
use tuner::campaign::{Session, SimClock};
use tuner::data::ExampleId;
use tuner::demo::build;
use tuner::sink::MemorySink;

fn routed_out_is_bit_identical(granularity: RoutingGranularity, resolution: DepthResolution) {
    let mut p = policy(granularity, EventGranularity::Batch);
    p.depth_resolution = resolution;
    // Source 0 is "shallow" (depth 1), source 1 "literary" (full depth).
    let mut cfg = config(2, 4000, 1, p);
    cfg.settings.optim.weight_decay = 0.1;
    let w = build(&cfg, &mut MemorySink::default(), &mut |_, _| {}).unwrap();
    let mut sink = MemorySink::default();
    let (mut s, _) = Session::open(
        w.spec.clone(),
        Box::new(SimClock {
            next: T0 + 100_000,
            step_ms: 10,
        }),
        &mut sink,
    )
    .unwrap();
    let deep: Vec<ExampleId> = (0..4).map(|i| ExampleId { source: 1, index: i }).collect();
    let shallow: Vec<ExampleId> = (0..4).map(|i| ExampleId { source: 0, index: i }).collect();
    // Steps 0..k: the deep source routes every unit in.
    for _ in 0..2 {
        let before = s.adapters().clone();
        assert!(s.train_on(&mut sink, &deep).unwrap().is_none());
        for (i, (a, b)) in before.values.iter().zip(&s.adapters().values).enumerate() {
            assert_ne!(
                a, b,
                "piece {} is routed in at step k and changes",
                before.layout.pieces[i].name
            );
        }
    }
    let before = s.adapters().clone();
    let opt = s.optimizer().clone();
    // Step k + 1: only the shallow source, whose mask routes out the early units.
    assert!(s.train_on(&mut sink, &shallow).unwrap().is_none());
    let mask = match sink.entries.last().unwrap() {
        EntryBody::Step(e) => {
            assert_eq!(e.examples.len(), 4);
            e.examples[0].decision.routing.clone()
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(mask.granularity, granularity);
    let layout = before.layout.clone();
    let (mut out, mut inn) = (0, 0);
    for (i, piece) in layout.pieces.iter().enumerate() {
        let unit = piece.unit(granularity, cfg.settings.model.heads);
        let (a, b) = (&before.values[i], &s.adapters().values[i]);
        if mask.allows(unit) {
            inn += 1;
            assert_ne!(a, b, "routed-in piece {} moves", piece.name);
        } else {
            out += 1;
            assert!(
                opt.m[i].iter().any(|&m| m != 0.0),
                "moments of {} are non-zero",
                piece.name
            );
            assert!(
                a.iter().any(|&x| x != 0.0),
                "{} is non-zero, so weight decay would move it",
                piece.name
            );
            let same = a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same, "routed-out piece {} is bit-identical", piece.name);
            assert_eq!(opt.m[i], s.optimizer().m[i], "its moments are untouched too");
        }
    }
    assert!(
        out > 0 && inn > 0,
        "both routed-in ({inn}) and routed-out ({out}) pieces exist"
    );
}

#[test]
fn block_granularity_routed_out_block_is_bit_identical() {
    routed_out_is_bit_identical(RoutingGranularity::Block, DepthResolution::Block);
}

#[test]
fn layer_granularity_routed_out_layer_is_bit_identical() {
    routed_out_is_bit_identical(RoutingGranularity::Layer, DepthResolution::Layer);
}

#[test]
fn head_granularity_routed_out_heads_are_bit_identical() {
    routed_out_is_bit_identical(RoutingGranularity::Head, DepthResolution::Layer);
}
