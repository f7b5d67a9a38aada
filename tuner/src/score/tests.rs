//! Tests of the scores: rankings, routing restrictions, checkpoints, determinism, errors.

use super::*;
use crate::lora::{AdapterLayout, LoraConfig};
use crate::model::ModelConfig;
use provenance::{Digest, RoutingGranularity, RoutingMask};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

fn coords() -> (AdapterLayout, BlockCoords) {
    let layout = AdapterLayout::new(
        ModelConfig {
            context: 16,
            d_model: 16,
            layers: 2,
            heads: 2,
            mlp_mult: 2,
        },
        LoraConfig {
            rank: 2,
            alpha: 4.0,
            dropout: 0.0,
        },
    )
    .unwrap();
    let c = BlockCoords::new(&layout, 2);
    (layout, c)
}

fn noise(rng: &mut ChaCha20Rng, d: usize, scale: f32) -> Vec<f32> {
    (0..d).map(|_| (rng.gen::<f32>() - 0.5) * scale).collect()
}

fn src(i: u8) -> Digest {
    Digest([i; 32])
}

/// 4 sources × 10 random examples; example 3 of source 2 is the query
/// direction plus noise.
fn world(c: &BlockCoords) -> (Vec<LoggedExample>, Vec<f32>) {
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let d = c.dim();
    let q = noise(&mut rng, d, 2.0);
    let mut ex = Vec::new();
    for s in 0..4u8 {
        for i in 0..10u64 {
            let mut v = noise(&mut rng, d, 1.0);
            if s == 2 && i == 3 {
                for (x, y) in v.iter_mut().zip(&q) {
                    *x = 0.2 * *x + y;
                }
            }
            ex.push(LoggedExample {
                source: src(s),
                index: i,
                step: i,
                event: i / 2,
                routing: None,
                values: v,
            });
        }
    }
    (ex, q)
}

#[test]
fn planted_example_dominates_both_methods_and_rankings_agree() {
    let (_, c) = coords();
    let (ex, q) = world(&c);
    let query = [QueryGradient { step: 10, values: q }];
    let lr = LrSchedule::Constant(0.01);
    let t = score(
        &c,
        &query,
        &ex,
        &lr,
        Method::TracIn {
            unit: false,
            adam: false,
            routed: false,
            common: 0,
        },
        None,
    )
    .unwrap();
    let pre = Preconditioner::fit(&c, &ex, 1.0, false).unwrap();
    let k = score(
        &c,
        &query,
        &ex,
        &lr,
        Method::Trak {
            lambda: 1.0,
            unit: false,
        },
        Some(&pre),
    )
    .unwrap();
    let pa = Preconditioner::fit_adam(&c, &ex).unwrap();
    let tu = score(&c, &query, &ex, &lr, Method::tracin_cosine(), None).unwrap();
    let pc = Preconditioner::fit_common(&c, &ex, DEFAULT_COMMON_DIRECTIONS).unwrap();
    let tc = score(&c, &query, &ex, &lr, Method::tracin(), Some(&pc)).unwrap();
    let ta = score(&c, &query, &ex, &lr, Method::tracin_adam(), Some(&pa)).unwrap();
    let pu = Preconditioner::fit(&c, &ex, DEFAULT_TRAK_LAMBDA, true).unwrap();
    let ku = score(&c, &query, &ex, &lr, Method::trak(), Some(&pu)).unwrap();
    for r in [&t, &k, &tu, &ku, &ta, &tc] {
        let top = r
            .examples
            .iter()
            .max_by(|a, b| a.score.total_cmp(&b.score))
            .unwrap();
        assert_eq!((top.source, top.index), (src(2), 3), "{}", r.method.name());
        assert_eq!(r.sources[0].source, src(2));
        assert_eq!(r.events[0].key, 1);
    }
    // Same source ranking on this easy case.
    let rank = |r: &TraceReport| r.sources.iter().map(|s| s.source).collect::<Vec<_>>();
    assert_eq!(rank(&t)[0], rank(&k)[0]);
    // The per-source and per-block sums add up to the total.
    let tot: f64 = t.examples.iter().map(|e| e.score).sum();
    let by_src: f64 = t.sources.iter().map(|s| s.score).sum();
    let by_blk: f64 = t.blocks.iter().map(|s| s.score).sum();
    assert!((tot - by_src).abs() < 1e-9 * tot.abs().max(1.0));
    assert!((tot - by_blk).abs() < 1e-9 * tot.abs().max(1.0));
}

#[test]
fn tracin_and_trak_rank_sources_alike_on_separated_sources() {
    // Each source's examples lie along its own direction; the query is
    // a mix with decreasing weights, so both methods must order the
    // sources by those weights.
    let (_, c) = coords();
    let d = c.dim();
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let dirs: Vec<Vec<f32>> = (0..4).map(|_| noise(&mut rng, d, 2.0)).collect();
    let mut ex = Vec::new();
    for (s, dir) in dirs.iter().enumerate() {
        for i in 0..20u64 {
            let n = noise(&mut rng, d, 0.05);
            ex.push(LoggedExample {
                source: src(s as u8),
                index: i,
                step: i,
                event: i,
                routing: None,
                values: dir.iter().zip(&n).map(|(a, b)| a + b).collect(),
            });
        }
    }
    let w = [4.0f32, 1.0, 3.0, 2.0];
    let q: Vec<f32> = (0..d).map(|j| (0..4).map(|s| w[s] * dirs[s][j]).sum()).collect();
    let query = [QueryGradient { step: 20, values: q }];
    let lr = LrSchedule::Constant(1.0);
    let t = score(
        &c,
        &query,
        &ex,
        &lr,
        Method::TracIn {
            unit: false,
            adam: false,
            routed: false,
            common: 0,
        },
        None,
    )
    .unwrap();
    let pre = Preconditioner::fit(&c, &ex, 0.1, true).unwrap();
    let k = score(&c, &query, &ex, &lr, Method::trak(), Some(&pre)).unwrap();
    let pa = Preconditioner::fit_adam(&c, &ex).unwrap();
    let a = score(&c, &query, &ex, &lr, Method::tracin_adam(), Some(&pa)).unwrap();
    let rank = |r: &TraceReport| r.sources.iter().map(|s| s.source).collect::<Vec<_>>();
    let want = vec![src(0), src(2), src(3), src(1)];
    assert_eq!(rank(&t), want);
    assert_eq!(rank(&k), want);
    assert_eq!(rank(&a), want);
}

#[test]
fn routed_out_blocks_contribute_nothing() {
    let (layout, c) = coords();
    let (mut ex, q) = world(&c);
    let query = [QueryGradient { step: 10, values: q }];
    let lr = LrSchedule::Constant(1.0);
    let before = score(
        &c,
        &query,
        &ex,
        &lr,
        Method::TracIn {
            unit: false,
            adam: false,
            routed: false,
            common: 0,
        },
        None,
    )
    .unwrap();
    // Route the planted example to block 0 only (the sketch keeps its
    // values elsewhere: the scorer must ignore them).
    let i = ex
        .iter()
        .position(|e| e.source == src(2) && e.index == 3)
        .unwrap();
    ex[i].routing = Some(RoutingMask::from_fn(
        RoutingGranularity::Block,
        layout.blocks(),
        |u| u == 0,
    ));
    let after = score(
        &c,
        &query,
        &ex,
        &lr,
        Method::TracIn {
            unit: false,
            adam: false,
            routed: false,
            common: 0,
        },
        None,
    )
    .unwrap();
    let blocks_of = |r: &TraceReport| {
        r.sources
            .iter()
            .find(|s| s.source == src(2))
            .unwrap()
            .blocks
            .clone()
    };
    let (b0, b1) = (blocks_of(&before), blocks_of(&after));
    // Block 0 unchanged, every other block loses exactly the planted
    // example's contribution (recomputed by hand).
    assert_eq!(b0[0].to_bits(), b1[0].to_bits());
    let e = &ex[i];
    for b in 1..c.blocks() {
        let mut own = 0f64;
        for &p in &c.pieces[b] {
            for j in c.piece_range(p) {
                own += f64::from(e.values[j]) * f64::from(query[0].values[j]);
            }
        }
        assert!(own.abs() > 1e-6);
        assert!(
            (b0[b] - own - b1[b]).abs() < 1e-9 * b0[b].abs().max(1.0),
            "block {b}"
        );
    }
    // Routed out of everything: score exactly zero.
    ex[i].routing = Some(RoutingMask::from_fn(
        RoutingGranularity::Block,
        layout.blocks(),
        |_| false,
    ));
    let none = score(
        &c,
        &query,
        &ex,
        &lr,
        Method::TracIn {
            unit: false,
            adam: false,
            routed: false,
            common: 0,
        },
        None,
    )
    .unwrap();
    let s = none
        .examples
        .iter()
        .find(|x| x.source == src(2) && x.index == 3)
        .unwrap();
    assert_eq!(s.score, 0.0);
    // Head routing: the layer-0 attention pieces of head 1 only.
    let heads = layout.model.heads;
    let m = RoutingMask::from_fn(
        RoutingGranularity::Head,
        (layout.model.layers * (heads + 1)) as u32,
        |u| u == 1,
    );
    let mask = c.piece_mask(Some(&m));
    for (p, spec) in layout.pieces.iter().enumerate() {
        assert_eq!(mask[p], spec.layer == 0 && spec.head == Some(1), "{}", spec.name);
    }
}

#[test]
fn routed_cosine_and_common_directions_respect_the_mask() {
    let (layout, c) = coords();
    let (mut ex, q) = world(&c);
    // The planted example is routed to block 0 only and equals the
    // query there: its routed cosine is exactly 1 (its plain cosine
    // only ‖q_block0‖ / ‖q‖).
    let i = ex
        .iter()
        .position(|e| e.source == src(2) && e.index == 3)
        .unwrap();
    ex[i].routing = Some(RoutingMask::from_fn(
        RoutingGranularity::Block,
        layout.blocks(),
        |u| u == 0,
    ));
    ex[i].values = q.clone();
    let query = [QueryGradient { step: 10, values: q }];
    let lr = LrSchedule::Constant(1.0);
    let routed = Method::TracIn {
        unit: true,
        adam: false,
        routed: true,
        common: 0,
    };
    let own = |r: &TraceReport| {
        r.examples
            .iter()
            .find(|x| x.source == src(2) && x.index == 3)
            .unwrap()
            .score
    };
    let r = score(&c, &query, &ex, &lr, routed, None).unwrap();
    assert!((own(&r) - 1.0).abs() < 1e-6, "{}", own(&r));
    let plain = score(&c, &query, &ex, &lr, Method::tracin_cosine(), None).unwrap();
    assert!(own(&plain) < 0.9 * own(&r));
    // Common directions out: still nothing outside block 0.
    let pc = Preconditioner::fit_common(&c, &ex, DEFAULT_COMMON_DIRECTIONS).unwrap();
    let t = score(&c, &query, &ex, &lr, Method::tracin(), Some(&pc)).unwrap();
    assert!(own(&t) > 0.0);
    let only: Vec<LoggedExample> = ex.iter().filter(|e| e.routing.is_some()).cloned().collect();
    let t1 = score(&c, &query, &only, &lr, Method::tracin(), Some(&pc)).unwrap();
    for (b, x) in t1.sources[0].blocks.iter().enumerate().skip(1) {
        assert_eq!(*x, 0.0, "block {b}");
    }
    // A wrong preconditioner is a typed error.
    assert!(score(&c, &query, &ex, &lr, Method::tracin(), None).is_err());
    let pa = Preconditioner::fit_adam(&c, &ex).unwrap();
    assert!(score(&c, &query, &ex, &lr, Method::tracin(), Some(&pa)).is_err());
}

#[test]
fn tracin_uses_the_nearest_checkpoint_and_the_step_rate() {
    let (_, c) = coords();
    let d = c.dim();
    let ones = vec![1.0f32; d];
    let ex: Vec<LoggedExample> = [1u64, 4, 6, 9]
        .iter()
        .map(|&s| LoggedExample {
            source: src(0),
            index: s,
            step: s,
            event: s,
            routing: None,
            values: ones.clone(),
        })
        .collect();
    // Query 1 at step 0, 2 at step 5, 3 at step 10 (all coordinates).
    let query: Vec<QueryGradient> = [(10u64, 3.0f32), (0, 1.0), (5, 2.0)]
        .iter()
        .map(|&(step, v)| QueryGradient {
            step,
            values: vec![v; d],
        })
        .collect();
    let lr = LrSchedule::PerStep((0..10).map(|i| i as f32).collect());
    let r = score(
        &c,
        &query,
        &ex,
        &lr,
        Method::TracIn {
            unit: false,
            adam: false,
            routed: false,
            common: 0,
        },
        None,
    )
    .unwrap();
    let got: Vec<f64> = r.examples.iter().map(|e| e.score).collect();
    // Step 1 → ckpt 0; 4 → 5; 6 → 5; 9 → 10. Score = lr · q · d.
    let want = [1.0 * 1.0, 4.0 * 2.0, 6.0 * 2.0, 9.0 * 3.0].map(|x| x * d as f64);
    assert_eq!(got, want);
    assert!(LrSchedule::PerStep(vec![0.1]).at(3).is_err());
}

#[test]
fn scores_are_bit_identical_in_any_input_order() {
    let (_, c) = coords();
    let (ex, q) = world(&c);
    let query = [
        QueryGradient {
            step: 0,
            values: q.iter().map(|x| x * 0.5).collect(),
        },
        QueryGradient { step: 10, values: q },
    ];
    let lr = LrSchedule::Constant(0.003);
    let mut rev = ex.clone();
    rev.reverse();
    let mut rq = query.to_vec();
    rq.reverse();
    for m in [
        Method::tracin(),
        Method::tracin_cosine(),
        Method::tracin_adam(),
        Method::TracIn {
            unit: false,
            adam: false,
            routed: false,
            common: 0,
        },
        Method::trak(),
        Method::Trak {
            lambda: 0.5,
            unit: false,
        },
    ] {
        let (lambda, unit) = match m {
            Method::Trak { lambda, unit } => (lambda, unit),
            Method::TracIn { unit, .. } => (DEFAULT_TRAK_LAMBDA, unit),
        };
        let fit = |x: &[LoggedExample]| {
            if m.adam() {
                Preconditioner::fit_adam(&c, x).unwrap()
            } else if m.common() > 0 {
                Preconditioner::fit_common(&c, x, m.common()).unwrap()
            } else {
                Preconditioner::fit(&c, x, lambda, unit).unwrap()
            }
        };
        let (p1, p2) = (fit(&ex), fit(&rev));
        let a = score(&c, &query, &ex, &lr, m, Some(&p1)).unwrap();
        let b = score(&c, &rq, &rev, &lr, m, Some(&p2)).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.digest(), b.digest());
        // A one-ulp change of one sketch changes the digest.
        let mut ex2 = ex.clone();
        ex2[7].values[0] = f32::from_bits(ex2[7].values[0].to_bits() ^ 1);
        let p3 = fit(&ex2);
        let c2 = score(&c, &query, &ex2, &lr, m, Some(&p3)).unwrap();
        assert_ne!(a.digest(), c2.digest());
    }
}

#[test]
fn malformed_inputs_are_typed_errors() {
    let (_, c) = coords();
    let (mut ex, q) = world(&c);
    let lr = LrSchedule::Constant(1.0);
    assert!(score(
        &c,
        &[],
        &ex,
        &lr,
        Method::TracIn {
            unit: false,
            adam: false,
            routed: false,
            common: 0,
        },
        None
    )
    .is_err());
    let query = [QueryGradient { step: 1, values: q }];
    assert!(score(&c, &query, &ex, &lr, Method::trak(), None).is_err());
    assert!(Preconditioner::fit(&c, &ex, 0.0, true).is_err());
    // A preconditioner fitted without normalisation cannot serve the
    // normalised method.
    let raw = Preconditioner::fit(&c, &ex, DEFAULT_TRAK_LAMBDA, false).unwrap();
    assert!(score(&c, &query, &ex, &lr, Method::trak(), Some(&raw)).is_err());
    ex[0].values.pop();
    assert!(score(
        &c,
        &query,
        &ex,
        &lr,
        Method::TracIn {
            unit: false,
            adam: false,
            routed: false,
            common: 0,
        },
        None
    )
    .is_err());
}

/// The view a trace answer shows: sources by salient score with their top
/// examples (ties by index), the top events plus every event a listed
/// example came from, highest score first.
#[test]
fn the_ranked_view_lists_what_an_answer_shows() {
    let (a, b) = (Digest([1; 32]), Digest([2; 32]));
    let ex = |source, index, event, score| ExampleScore {
        source,
        index,
        step: event,
        event,
        score,
    };
    let src = |source, score, salient, examples| SourceScore {
        source,
        score,
        salient,
        examples,
        blocks: vec![],
    };
    let key = |key, score, examples| KeyScore { key, score, examples };
    let report = TraceReport {
        method: Method::tracin(),
        examples: vec![
            ex(a, 0, 0, 0.5),
            ex(a, 1, 1, 0.5),
            ex(a, 2, 2, 0.1),
            ex(b, 0, 3, 2.0),
        ],
        // b has the higher score, a the salient part: a ranks first.
        sources: vec![src(b, 2.0, 0.0, 1), src(a, 1.1, 0.4, 3)],
        salient_threshold: 0.1,
        events: vec![key(3, 2.0, 1), key(0, 0.5, 1), key(1, 0.5, 1), key(2, 0.1, 1)],
        steps: vec![],
        blocks: vec![],
    };
    let v = report.ranked(2, 1);
    assert_eq!(v.examples_scored, 4);
    let order: Vec<(usize, Digest)> = v.sources.iter().map(|s| (s.rank, s.score.source)).collect();
    assert_eq!(order, vec![(1, a), (2, b)]);
    let top: Vec<u64> = v.sources[0].top.iter().map(|e| e.index).collect();
    assert_eq!(top, vec![0, 1], "ties by index, two per source");
    // Event 3 is the top event; 0 and 1 hold a's listed examples, 3 b's.
    let events: Vec<u64> = v.events.iter().map(|e| e.key).collect();
    assert_eq!(events, vec![3, 0, 1]);
    assert_eq!(report.ranked(0, 0).events, vec![]);
    assert_eq!(report.ranked(1, 4).events.len(), 4);
}
