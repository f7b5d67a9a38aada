//! Must-show: a planted canary is caught by a strict exposure threshold
//! (rolled back, refused, not reproduced) and memorised under a lax one.

mod common;

use common::*;
use provenance::*;
use tuner::campaign::{run, CampaignOutcome, SimClock, Stop};
use tuner::demo::{build, CanaryPlant};
use tuner::memo::Canary;
use tuner::sink::MemorySink;

const PREFIX: &str = "the secret number is ";
const SECRET: &str = "284615";

fn campaign(exposure_threshold: f32) -> (CampaignOutcome, MemorySink, Vec<u8>, Digest) {
    let mut p = policy(RoutingGranularity::Block, EventGranularity::Batch);
    p.memorisation.canary_exposure = exposure_threshold;
    let mut cfg = config(2, 4000, 0, p);
    // Every window of source 0 carries the canary; half the examples do.
    cfg.settings.max_steps = 300;
    cfg.settings.optim.lr = 5e-3;
    cfg.settings.batch_size = 4;
    cfg.settings.lora.alpha = 16.0;
    cfg.canaries = vec![CanaryPlant {
        source: 0,
        canary: Canary {
            prefix: PREFIX.into(),
            secret: SECRET.into(),
            candidates: 64,
        },
        every: 1,
        offset: 0,
    }];
    let w = build(&cfg, &mut MemorySink::default(), &mut |_, _| {}).unwrap();
    let canary_source = w.spec.sources[0].manifest.source_id();
    let base = w.spec.base.clone();
    let mut sink = MemorySink::default();
    let out = run(
        w.spec.clone(),
        Box::new(SimClock {
            next: T0 + 100_000,
            step_ms: 10,
        }),
        &mut sink,
        &mut (),
    )
    .unwrap();
    assert_eq!(out.stop, Stop::Finished);
    // Rebuild the final adapters from the delta blobs and decode greedily.
    let layout = std::sync::Arc::new(cfg.settings.layout().unwrap());
    let mut a = tuner::lora::Adapters::init(layout, tuner::lora::adapter_init_seed(cfg.settings.sketch_seed));
    for e in &sink.entries {
        if let EntryBody::Step(s) = e {
            let (_, _, d) = tuner::blobs::decode_delta(&sink.blobs[&s.delta_blob]).unwrap();
            tuner::blobs::apply(&mut a, &d).unwrap();
        }
    }
    assert_eq!(a.state_digest(&base.digest()), out.final_state);
    let bt = base.to_tensors(&candle_core::Device::Cpu).unwrap();
    let text = tuner::model::greedy(
        &cfg.settings.model,
        &bt,
        Some(&a),
        PREFIX.as_bytes(),
        SECRET.len(),
    )
    .unwrap();
    (out, sink, text, canary_source)
}

/// Per attempted step: (contains the canary, committed).
fn steps(sink: &MemorySink, canary_source: &Digest, threshold: f32) -> Vec<(bool, bool)> {
    let mut out = Vec::new();
    for e in &sink.entries {
        match e {
            EntryBody::Step(s) => {
                assert!(s.measurement.signals.canary_exposure <= threshold);
                out.push((s.examples.iter().any(|x| &x.source == canary_source), true));
            }
            EntryBody::Refusal(r) => {
                assert_eq!(r.reason, RefusalReason::Memorisation);
                let m = r
                    .measurement
                    .as_ref()
                    .expect("a rolled-back step carries its measurement");
                assert!(m.signals.canary_exposure > threshold, "{}", r.detail);
                assert!(r.detail.contains("canary exposure"));
                out.push((r.examples.iter().any(|x| &x.source == canary_source), false));
            }
            _ => {}
        }
    }
    out
}

#[test]
fn a_strict_exposure_threshold_rolls_back_canary_steps_and_a_lax_one_memorises() {
    let (lax, lax_sink, lax_text, src) = campaign(1e6);
    assert_eq!(lax.rolled_back, 0);
    assert_eq!(
        lax_text,
        SECRET.as_bytes(),
        "a lax threshold lets the model memorise the canary"
    );
    let lax_steps = steps(&lax_sink, &src, 1e6);
    assert!(lax_steps.iter().all(|&(_, c)| c));

    let (strict, strict_sink, strict_text, src) = campaign(4.0);
    assert!(strict.rolled_back > 0);
    assert!(
        !strict_text.starts_with(&SECRET.as_bytes()[..3]),
        "greedy decoding does not reproduce it: {:?}",
        String::from_utf8_lossy(&strict_text)
    );
    let st = steps(&strict_sink, &src, 4.0);
    assert_eq!(st.len() as u64, strict.attempts);
    let clean: Vec<bool> = st.iter().filter(|(c, _)| !c).map(|&(_, ok)| ok).collect();
    assert!(
        clean.len() >= 10,
        "enough steps without the canary to judge ({})",
        clean.len()
    );
    let kept = clean.iter().filter(|&&ok| ok).count();
    assert!(
        kept * 10 >= clean.len() * 9,
        "{kept} of {} canary-free steps committed",
        clean.len()
    );
    assert!(
        st.iter().filter(|(c, _)| *c).any(|&(_, ok)| !ok),
        "canary steps were refused"
    );
    // Rolled-back steps changed nothing: the refused examples are counted, the state chain is closed.
    let close = strict.close.expect("closed");
    let refused: u64 = close.per_source.iter().map(|c| c.refused).sum();
    assert!(refused >= strict.rolled_back);
}
