//! Auditors' replay (`tuner::replay`) against a real campaign: governance
//! replays every step of an honest run bit for bit and ends at its final
//! state; each data source replays its own examples' sketches alone; a
//! step trained without clipping, a forged sketch, a hidden memorisation
//! signal and a wrong optimizer state are each named on replay.

mod common;

use std::collections::BTreeMap;

use common::*;
use provenance::*;
use tuner::blobs::decode_sketches;
use tuner::campaign::{run, CampaignSpec, SimClock, Stop};
use tuner::compute::{compute_step, probe_losses, Clipping, Prepared};
use tuner::data::PreparedSource;
use tuner::demo::build;
use tuner::lora::Adapters;
use tuner::optim::AdamW;
use tuner::replay::{replay_examples, replay_step, ReplayFault, StatedExample};
use tuner::sink::MemorySink;

/// A data source compares its replayed sketches, unrounded, with the
/// blob's bf16 values (rounded by at most 2^-9 each): twice that.
const TOLERANCE: f32 = 0.004;

struct Run {
    spec: CampaignSpec,
    sink: MemorySink,
    final_state: Digest,
    sources: BTreeMap<Digest, PreparedSource>,
}

/// Eight steps of four examples over four sources of two authorities,
/// clipped hard enough that clipping binds.
fn honest_run() -> Run {
    let mut p = policy(RoutingGranularity::Head, EventGranularity::Batch);
    for d in &mut p.depth {
        d.clip_norm = 0.05;
    }
    let mut cfg = config(4, 4000, 1, p);
    cfg.settings.max_steps = 8;
    cfg.settings.batch_size = 4;
    let w = build(&cfg, &mut MemorySink::default(), &mut |_, _| {}).expect("built");
    let spec = w.spec.clone();
    let mut sink = MemorySink::default();
    let out = run(
        w.spec,
        Box::new(SimClock {
            next: T0 + 100_000,
            step_ms: 10,
        }),
        &mut sink,
        &mut (),
    )
    .expect("ran");
    assert_eq!(out.stop, Stop::Finished);
    let window = spec.settings.model.window();
    let sources = spec
        .sources
        .iter()
        .map(|s| {
            let p = PreparedSource::new(s.clone(), window).expect("source");
            (p.id, p)
        })
        .collect();
    Run {
        spec,
        sink,
        final_state: out.final_state,
        sources,
    }
}

/// The run's step context, as the operator had it.
fn prepared(r: &Run) -> Prepared {
    Prepared::new(
        &r.spec.settings,
        &r.spec.base,
        r.spec.probe.clone(),
        r.spec.canaries.clone(),
    )
    .expect("prepared")
}

fn steps(sink: &MemorySink) -> Vec<StepEvent> {
    sink.entries
        .iter()
        .filter_map(|e| match e {
            EntryBody::Step(s) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

/// The step's examples as its record and sketch blob state them.
fn stated<'a>(r: &'a Run, e: &'a StepEvent, sketches: &'a [Vec<f32>]) -> Vec<StatedExample<'a>> {
    e.examples
        .iter()
        .zip(sketches)
        .map(|(x, s)| StatedExample {
            window: r.sources[&x.source].window(x.index),
            decision: &x.decision,
            sketch: s,
        })
        .collect()
}

fn sketches_of(sink: &MemorySink, e: &StepEvent) -> Vec<Vec<f32>> {
    let (_, recs) = decode_sketches(&sink.blobs[&e.sketch_blob]).expect("sketch blob");
    assert_eq!(recs.len(), e.examples.len());
    for (r, x) in recs.iter().zip(&e.examples) {
        assert_eq!((r.source, r.index), (x.source, x.index));
    }
    recs.into_iter().map(|r| r.values).collect()
}

/// Follows the honest chain by replay up to (not including) step `k`.
fn state_before(r: &Run, prep: &Prepared, k: u64) -> (Adapters, AdamW, Digest) {
    let (mut adapters, mut opt) = prep.initial();
    let mut committed = opt.digest();
    for e in steps(&r.sink).iter().take_while(|e| e.step < k) {
        let sk = sketches_of(&r.sink, e);
        let ex = stated(r, e, &sk);
        let rep = replay_step(
            &prep.ctx(),
            0.0,
            &adapters,
            &opt,
            &committed,
            &ex,
            &e.measurement,
            e.step,
        )
        .expect("an honest step replays");
        adapters = rep.outcome.after;
        opt = rep.outcome.opt;
        committed = e.measurement.optimizer_state;
    }
    (adapters, opt, committed)
}

#[test]
fn honest_steps_replay_exactly_and_each_source_replays_its_own_examples_alone() {
    let r = honest_run();
    let prep = prepared(&r);
    let ctx = prep.ctx();
    let (mut adapters, mut opt) = prep.initial();
    let mut committed = opt.digest();
    let all = steps(&r.sink);
    assert_eq!(all.len(), 8);
    let mut own_replays = 0;
    let mut digests = Vec::new();
    for e in &all {
        let sk = sketches_of(&r.sink, e);
        let ex = stated(&r, e, &sk);
        let rep = replay_step(
            &ctx,
            0.0,
            &adapters,
            &opt,
            &committed,
            &ex,
            &e.measurement,
            e.step,
        )
        .unwrap_or_else(|f| panic!("step {} does not replay: {f}", e.step));
        assert!(
            rep.outcome.clip.iter().flatten().any(|c| *c < 1.0),
            "clipping binds at step {}",
            e.step
        );
        digests.push(rep.digest);
        // Each source's examples, replayed alone.
        let mut by_source: BTreeMap<Digest, Vec<StatedExample<'_>>> = BTreeMap::new();
        for (x, s) in e.examples.iter().zip(&ex) {
            by_source.entry(x.source).or_default().push(*s);
        }
        for own in by_source.values() {
            replay_examples(&ctx, 0.0, &adapters, own, TOLERANCE, e.step)
                .unwrap_or_else(|f| panic!("step {}: a source's own replay fails: {f}", e.step));
            own_replays += 1;
        }
        adapters = rep.outcome.after;
        opt = rep.outcome.opt;
        committed = e.measurement.optimizer_state;
    }
    assert_eq!(adapters.state_digest(&prep.base_digest), r.final_state);
    digests.sort();
    digests.dedup();
    assert_eq!(digests.len(), 8, "each step's replay has its own digest");
    assert_eq!(
        own_replays, 20,
        "every source with examples in a step replayed them"
    );
}

/// The fault of a replay expected to fail (an `Ok` is not printed: it
/// holds the whole model).
fn refused<T>(r: Result<T, ReplayFault>) -> ReplayFault {
    match r {
        Ok(_) => panic!("the replay confirmed a dishonest step"),
        Err(f) => f,
    }
}

#[test]
fn a_step_without_clipping_a_forged_sketch_a_hidden_signal_or_another_optimizer_state_is_named() {
    let r = honest_run();
    let prep = prepared(&r);
    let ctx = prep.ctx();
    let all = steps(&r.sink);
    let e = &all[3];
    let (adapters, opt, committed) = state_before(&r, &prep, e.step);
    let sk = sketches_of(&r.sink, e);
    let ex = stated(&r, e, &sk);
    // The honest step replays from that state.
    replay_step(
        &ctx,
        0.0,
        &adapters,
        &opt,
        &committed,
        &ex,
        &e.measurement,
        e.step,
    )
    .expect("honest");

    // Trained without clipping: the measurement consistent with the
    // unclipped update (delta, norms, states), the sketches unchanged.
    let windows: Vec<&[u8]> = ex.iter().map(|x| x.window).collect();
    let decisions: Vec<&AdmitDecision> = ex.iter().map(|x| x.decision).collect();
    let probe = probe_losses(&ctx, &adapters).expect("probe");
    let unclipped = compute_step(
        &ctx,
        &adapters,
        &opt,
        &probe,
        &windows,
        &decisions,
        None,
        Clipping::Off,
        e.step,
    )
    .expect("unclipped step");
    let err = refused(replay_step(
        &ctx,
        0.0,
        &adapters,
        &opt,
        &committed,
        &ex,
        &unclipped.measurement,
        e.step,
    ));
    assert!(
        matches!(&err, ReplayFault::Differs { what, .. } if what.contains("delta") || what.contains("norm")),
        "{err}"
    );

    // A forged sketch (one example's scaled): governance and the
    // example's own source name it; another source's replay still holds.
    let mut forged = sk.clone();
    for v in &mut forged[0] {
        *v *= 1.5;
    }
    let fx = stated(&r, e, &forged);
    let err = refused(replay_step(
        &ctx,
        0.0,
        &adapters,
        &opt,
        &committed,
        &fx,
        &e.measurement,
        e.step,
    ));
    assert!(
        matches!(&err, ReplayFault::Differs { what, .. } if what.contains("sketch")),
        "{err}"
    );
    let src = e.examples[0].source;
    let own: Vec<StatedExample<'_>> = e
        .examples
        .iter()
        .zip(&fx)
        .filter(|(x, _)| x.source == src)
        .map(|(_, s)| *s)
        .collect();
    let err = refused(replay_examples(&ctx, 0.0, &adapters, &own, TOLERANCE, e.step));
    assert!(
        matches!(&err, ReplayFault::Differs { what, .. } if what.contains("sketch")),
        "{err}"
    );
    let others: Vec<StatedExample<'_>> = e
        .examples
        .iter()
        .zip(&fx)
        .filter(|(x, _)| x.source != src)
        .map(|(_, s)| *s)
        .collect();
    if !others.is_empty() {
        replay_examples(&ctx, 0.0, &adapters, &others, TOLERANCE, e.step).expect("the others' sketches hold");
    }

    // A memorisation signal hidden (reported below what the step shows).
    assert!(e.measurement.signals.loss_drop_z > 0.0);
    let mut hidden = e.measurement.clone();
    hidden.signals.loss_drop_z = 0.0;
    let err = refused(replay_step(
        &ctx, 0.0, &adapters, &opt, &committed, &ex, &hidden, e.step,
    ));
    assert!(
        matches!(&err, ReplayFault::Differs { what, .. } if what == "loss_drop_z"),
        "{err}"
    );

    // Moments that are not the committed ones.
    let (_, fresh) = prep.initial();
    assert!(matches!(
        replay_step(
            &ctx,
            0.0,
            &adapters,
            &fresh,
            &committed,
            &ex,
            &e.measurement,
            e.step
        ),
        Err(ReplayFault::OptimizerState { .. })
    ));
    // A campaign with dropout cannot be replayed.
    assert!(matches!(
        replay_step(
            &ctx,
            0.1,
            &adapters,
            &opt,
            &committed,
            &ex,
            &e.measurement,
            e.step
        ),
        Err(ReplayFault::Unsupported(_))
    ));
}

#[test]
fn an_auditor_rebuilds_the_step_context_from_the_recipe_and_the_context_it_is_sent() {
    let r = honest_run();
    let path = std::env::temp_dir().join(format!("govtune-replay-base-{}.safetensors", std::process::id()));
    r.spec.base.save(&path).expect("saved");
    let base_bytes = std::fs::read(&path).expect("read");
    let _ = std::fs::remove_file(&path);
    let context = tuner::material::AuditContext {
        probe: r.spec.probe.clone(),
        canaries: r.spec.canaries.clone(),
    };
    let recipe = tuner::recipe::Recipe::new(r.spec.settings.clone(), &base_bytes, Vec::new())
        .with_audit_context(&context);
    let prep = Prepared::from_recipe(&recipe, &r.spec.campaign, &base_bytes, &context).expect("rebuilt");
    // The rebuilt context replays the first step exactly.
    let (adapters, opt) = prep.initial();
    let e = &steps(&r.sink)[0];
    let sk = sketches_of(&r.sink, e);
    let ex = stated(&r, e, &sk);
    replay_step(
        &prep.ctx(),
        0.0,
        &adapters,
        &opt,
        &opt.digest(),
        &ex,
        &e.measurement,
        e.step,
    )
    .expect("replays from the rebuilt context");
    // A context other than the one the recipe commits is refused.
    let mut other = context.clone();
    other.probe.pop();
    assert!(Prepared::from_recipe(&recipe, &r.spec.campaign, &base_bytes, &other).is_err());
    // A context the recipe commits but that does not fit the model is
    // refused before anything is drawn from it: a short probe window, a
    // canary asking for a million candidates.
    for bad in [
        tuner::material::AuditContext {
            probe: vec![Vec::new(), Vec::new()],
            canaries: Vec::new(),
        },
        tuner::material::AuditContext {
            probe: context.probe.clone(),
            canaries: vec![tuner::memo::Canary {
                prefix: "the code is ".into(),
                secret: "1234".into(),
                candidates: 1 << 20,
            }],
        },
    ] {
        let committed = recipe.clone().with_audit_context(&bad);
        assert!(Prepared::from_recipe(&committed, &r.spec.campaign, &base_bytes, &bad).is_err());
    }
    // Base weights other than the recipe's are refused.
    let mut bytes = base_bytes.clone();
    let n = bytes.len();
    bytes[n - 1] ^= 1;
    assert!(Prepared::from_recipe(&recipe, &r.spec.campaign, &bytes, &context).is_err());
}
