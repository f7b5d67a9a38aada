//! The governed step: determinism, the batched per-example path against
//! the batch-size-1 reference, and co-signer refusal with resume.
#![allow(clippy::needless_range_loop)]

mod common;

use common::*;
use provenance::*;
use tuner::campaign::{run, Session, SimClock, Stop};
use tuner::demo::build;
use tuner::model::batch_tensors;
use tuner::sink::MemorySink;

fn clock() -> Box<SimClock> {
    Box::new(SimClock {
        next: T0 + 100_000,
        step_ms: 10,
    })
}

#[test]
fn same_seed_gives_the_same_model_bit_for_bit() {
    let mut cfg = config(
        4,
        6000,
        0,
        policy(RoutingGranularity::Head, EventGranularity::Batch),
    );
    cfg.settings.lora.dropout = 0.1;
    cfg.settings.max_steps = 6;
    let mut digests = Vec::new();
    for _ in 0..2 {
        let w = build(&cfg, &mut MemorySink::default(), &mut |_, _| {}).unwrap();
        let mut sink = MemorySink::default();
        let out = run(w.spec, clock(), &mut sink, &mut ()).unwrap();
        assert_eq!(out.stop, Stop::Finished);
        assert_eq!(out.steps, 6);
        digests.push((out.final_state, out.head));
    }
    assert_eq!(digests[0], digests[1]);
}

#[test]
fn batched_per_example_quantities_match_the_batch_size_one_reference() {
    let cfg = config(
        2,
        4000,
        0,
        policy(RoutingGranularity::Head, EventGranularity::Batch),
    );
    let w = build(&cfg, &mut MemorySink::default(), &mut |_, _| {}).unwrap();
    let mut sink = MemorySink::default();
    let (mut s, _) = Session::open(w.spec.clone(), clock(), &mut sink).unwrap();
    // Train a few steps so B matrices are non-zero (all pieces have gradients).
    for _ in 0..3 {
        let batch: Vec<_> = (0..4u64)
            .map(|i| tuner::data::ExampleId { source: 0, index: i })
            .collect();
        assert!(s.train_on(&mut sink, &batch).unwrap().is_none());
    }
    let model = cfg.settings.model;
    let srcs: Vec<_> = w
        .spec
        .sources
        .iter()
        .map(|x| tuner::data::PreparedSource::new(x.clone(), model.window()).unwrap())
        .collect();
    // 12-token sequences: some pieces take the Gram (ghost) path, some the materialised one.
    let windows: Vec<&[u8]> = (0..5u64).map(|i| &srcs[1].window(i)[..13]).collect();
    let adapters = s.adapters().clone();
    let layout = adapters.layout.clone();
    let base = s.base_tensors();
    let dev = candle_core::Device::Cpu;
    let (inp, tgt) = batch_tensors(&windows, &dev).unwrap();
    let mut f = tuner::lora::LoraForward::probing(&adapters, 5, 12, None, &dev).unwrap();
    let logits = tuner::model::forward(&model, base, &inp, Some(&mut f)).unwrap();
    let g = tuner::model::per_example_loss(&logits, &tgt)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let st = tuner::pergrad::SiteTensors::collect(&f, &g).unwrap();
    let norms = tuner::pergrad::sq_norms(&layout, &st).unwrap();
    let routed = vec![vec![true; 5]; layout.pieces.len()];
    let sk = s.projection().sketches(&layout, &st, &routed).unwrap();
    let w8: Vec<Vec<f32>> = (0..layout.pieces.len())
        .map(|_| vec![0.5, 0.25, 1.0, 0.0, 0.125])
        .collect();
    let sum = tuner::pergrad::weighted_sum(&layout, &st, &w8).unwrap();
    let r = tuner::pergrad::reference(&model, base, &adapters, &windows, Some(s.projection())).unwrap();
    let close = |a: f32, b: f32| (a - b).abs() <= 1e-4 * (1.0 + a.abs().max(b.abs()));
    let mut ghost = 0;
    for (pi, p) in layout.pieces.iter().enumerate() {
        if 12 * 12 < p.rows * p.cols {
            ghost += 1;
        }
        for i in 0..5 {
            assert!(
                close(norms[pi][i], r.sq_norms[pi][i]),
                "piece {} ex {i}: {} vs {}",
                p.name,
                norms[pi][i],
                r.sq_norms[pi][i]
            );
        }
        let expect: Vec<f32> = (0..p.len())
            .map(|j| (0..5).map(|i| w8[pi][i] * r.grads[i][pi][j]).sum())
            .collect();
        let got = sum[pi].as_ref().unwrap();
        for j in 0..p.len() {
            assert!(close(got[j], expect[j]), "sum piece {} [{j}]", p.name);
        }
    }
    assert!(ghost > 0, "the Gram (ghost) path is exercised");
    assert!(ghost < layout.pieces.len(), "the materialised path is exercised");
    for i in 0..5 {
        assert_eq!(sk[i].len(), r.sketches[i].len());
        for (a, b) in sk[i].iter().zip(&r.sketches[i]) {
            assert!(close(*a, *b), "sketch {i}: {a} vs {b}");
        }
    }
    assert!(norms.iter().flatten().any(|&n| n > 0.0));
}

#[test]
fn a_co_signer_refusal_stops_at_the_last_committed_step_and_resumes() {
    let cfg = config(
        3,
        6000,
        0,
        policy(RoutingGranularity::Block, EventGranularity::Batch),
    );
    let w = build(&cfg, &mut MemorySink::default(), &mut |_, _| {}).unwrap();
    // Reference run without refusal.
    let mut full = MemorySink::default();
    let out_full = run(w.spec.clone(), clock(), &mut full, &mut ()).unwrap();
    // Entry 0 is the Campaign; refuse entry 6 (the 6th step event).
    let mut sink = MemorySink {
        refuse_at: Some(6),
        ..Default::default()
    };
    let (mut s, _) = Session::open(w.spec.clone(), clock(), &mut sink).unwrap();
    let stop = s.run(&mut sink, &mut ()).unwrap();
    match &stop {
        Stop::CoSignerRefused { kind, reason } => {
            assert_eq!(*kind, "StepEvent");
            assert!(reason.contains("refused"));
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(s.steps(), 5, "stopped at the last committed step");
    let last = match sink.entries.last().unwrap() {
        EntryBody::Step(e) => e.measurement.model_state,
        other => panic!("{other:?}"),
    };
    assert_eq!(s.state_digest(), last, "the state is the last committed one");
    // Resume with a co-signer that accepts.
    let stop = s.run(&mut sink, &mut ()).unwrap();
    assert_eq!(stop, Stop::Finished);
    let out = s.close(&mut sink, stop).unwrap();
    assert_eq!(out.steps, out_full.steps);
    assert_eq!(
        out.final_state, out_full.final_state,
        "resuming reproduces the uninterrupted run"
    );
    // The chain has no gap: seq runs 0.. and each prev is the previous digest.
    let mut prev = Digest::ZERO;
    for (i, e) in sink
        .entries
        .iter()
        .skip(1)
        .filter(|e| !matches!(e, EntryBody::CampaignClose(_)))
        .enumerate()
    {
        let link = match e {
            EntryBody::Step(x) => x.link,
            EntryBody::Refusal(x) => x.link,
            EntryBody::RefusalAggregate(x) => x.link,
            EntryBody::Composite(x) => x.link,
            other => panic!("{other:?}"),
        };
        assert_eq!(link.seq, i as u64);
        assert_eq!(link.prev, prev);
        prev = e.digest();
    }
    assert_eq!(out.head, prev);
}

#[test]
fn probe_gradients_equal_autograd_gradients_of_the_adapters() {
    let cfg = config(
        1,
        4000,
        0,
        policy(RoutingGranularity::Head, EventGranularity::Batch),
    );
    let w = build(&cfg, &mut MemorySink::default(), &mut |_, _| {}).unwrap();
    let mut sink = MemorySink::default();
    let (mut s, _) = Session::open(w.spec.clone(), clock(), &mut sink).unwrap();
    let batch: Vec<_> = (0..4u64)
        .map(|i| tuner::data::ExampleId { source: 0, index: i })
        .collect();
    assert!(s.train_on(&mut sink, &batch).unwrap().is_none());
    let model = cfg.settings.model;
    let src = tuner::data::PreparedSource::new(w.spec.sources[0].clone(), model.window()).unwrap();
    let windows: Vec<&[u8]> = (4..8u64).map(|i| src.window(i)).collect();
    let adapters = s.adapters().clone();
    let layout = adapters.layout.clone();
    let dev = candle_core::Device::Cpu;
    let (inp, tgt) = batch_tensors(&windows, &dev).unwrap();
    // Autograd on the adapters themselves.
    let vars: Vec<candle_core::Var> = adapters
        .tensors(&dev)
        .unwrap()
        .iter()
        .map(|t| candle_core::Var::from_tensor(t).unwrap())
        .collect();
    let mut fv = tuner::lora::LoraForward::with_vars(layout.clone(), vars.clone(), None).unwrap();
    let logits = tuner::model::forward(&model, s.base_tensors(), &inp, Some(&mut fv)).unwrap();
    let g = tuner::model::per_example_loss(&logits, &tgt)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    // Probe path.
    let mut f = tuner::lora::LoraForward::probing(&adapters, 4, model.context, None, &dev).unwrap();
    let logits = tuner::model::forward(&model, s.base_tensors(), &inp, Some(&mut f)).unwrap();
    let gp = tuner::model::per_example_loss(&logits, &tgt)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let st = tuner::pergrad::SiteTensors::collect(&f, &gp).unwrap();
    let ones = vec![vec![1.0f32; 4]; layout.pieces.len()];
    let sum = tuner::pergrad::weighted_sum(&layout, &st, &ones).unwrap();
    for (pi, p) in layout.pieces.iter().enumerate() {
        let auto = g
            .get(vars[pi].as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let got = sum[pi].as_ref().unwrap();
        let scale = auto.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
        for (a, b) in auto.iter().zip(got) {
            assert!(
                (a - b).abs() <= 1e-3 * scale,
                "piece {}: autograd {a} vs probe {b}",
                p.name
            );
        }
    }
}

/// When consensus refuses a record because the campaign's policy was
/// superseded, the session stops and closes the campaign at its last
/// committed record (the close names no policy, so it commits).
#[test]
fn a_superseded_policy_closes_the_campaign_at_its_last_committed_record() {
    let cfg = config(
        3,
        6000,
        0,
        policy(RoutingGranularity::Block, EventGranularity::Batch),
    );
    let w = build(&cfg, &mut MemorySink::default(), &mut |_, _| {}).unwrap();
    let mut sink = MemorySink {
        refuse_at: Some(4),
        refuse_reason: Some(format!(
            "expired: policy 1234 {} 5678: a campaign record must name the current policy",
            provenance::state::POLICY_SUPERSEDED
        )),
        ..Default::default()
    };
    let (mut s, _) = Session::open(w.spec.clone(), clock(), &mut sink).unwrap();
    let stop = s.run(&mut sink, &mut ()).unwrap();
    assert!(matches!(stop, Stop::PolicySuperseded { .. }), "{stop:?}");
    let records = sink.entries.len() - 1;
    let out = s.close(&mut sink, stop).unwrap();
    let close = out.close.expect("closed");
    assert_eq!(
        close.entries as usize, records,
        "closed at the last committed record"
    );
    match sink.entries.last().unwrap() {
        EntryBody::CampaignClose(c) => assert_eq!(c, &close),
        other => panic!("the last entry is the close, got {other:?}"),
    }
}
