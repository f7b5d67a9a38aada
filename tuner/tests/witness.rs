//! A co-signer's check of an event's effect (`tuner::witness`), against a
//! real campaign: every honest event passes and the chain ends at the
//! campaign's final state; each way an operator could misreport an update
//! is refused with its reason, even when the cheat keeps the measurement
//! consistent with the delta it ships.

mod common;

use common::*;
use provenance::*;
use tuner::blobs::{blob_digest, decode_delta, encode_delta, PieceDelta};
use tuner::campaign::{run, CampaignOutcome, SimClock, Stop};
use tuner::demo::build;
use tuner::recipe::Recipe;
use tuner::sink::MemorySink;
use tuner::witness::{CampaignWitness, StepFault};

/// The fine-tune of `cfg` (its base pretrained aside), into memory.
fn fine_tune(cfg: &tuner::demo::DemoConfig) -> (CampaignOutcome, MemorySink) {
    let w = build(cfg, &mut MemorySink::default(), &mut |_, _| {}).unwrap();
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
    .unwrap();
    (out, sink)
}

/// A shallow campaign: every source may reach only the last layer, so the
/// first layer's pieces are routed out of every event.
fn campaign() -> (CampaignOutcome, MemorySink, tuner::demo::DemoConfig) {
    let mut cfg = config(
        2,
        4000,
        2,
        policy(RoutingGranularity::Layer, EventGranularity::Batch),
    );
    cfg.settings.max_steps = 8;
    cfg.settings.batch_size = 4;
    let (out, sink) = fine_tune(&cfg);
    assert_eq!(out.stop, Stop::Finished);
    (out, sink, cfg)
}

fn campaign_record(sink: &MemorySink) -> Campaign {
    sink.entries
        .iter()
        .find_map(|e| match e {
            EntryBody::Campaign(c) => Some(c.clone()),
            _ => None,
        })
        .expect("the campaign")
}

fn witness(sink: &MemorySink, cfg: &tuner::demo::DemoConfig) -> CampaignWitness {
    CampaignWitness::new(
        &campaign_record(sink),
        &Recipe::new(cfg.settings.clone(), b"", Vec::new()),
    )
    .unwrap()
}

fn events(sink: &MemorySink) -> Vec<EntryBody> {
    sink.entries
        .iter()
        .filter(|e| e.event().is_some())
        .cloned()
        .collect()
}

fn step_mut(e: &mut EntryBody) -> &mut StepEvent {
    match e {
        EntryBody::Step(s) => s,
        _ => panic!("step events expected"),
    }
}

#[test]
fn a_co_signer_follows_an_honest_campaign_and_refuses_each_misreported_update() {
    let (out, sink, cfg) = campaign();
    let evs = events(&sink);
    assert!(evs.len() >= 4, "{} events", evs.len());
    let blob = |e: &EntryBody| sink.blobs[e.event().unwrap().delta_blob].clone();

    // Honest: every event passes, the chain ends at the final state.
    let mut w = witness(&sink, &cfg);
    let mut before_third = None;
    for (i, e) in evs.iter().enumerate() {
        if i == 2 {
            before_third = Some(w.clone());
        }
        let checked = w
            .check(&e.event().unwrap(), &blob(e))
            .unwrap_or_else(|f| panic!("event {i}: {f}"));
        w.commit(checked);
    }
    assert_eq!(w.state(), out.final_state);
    let w = before_third.unwrap();
    let honest = &evs[2];
    assert!(w.check(&honest.event().unwrap(), &blob(honest)).is_ok());

    // Under-reported norm.
    let mut e = honest.clone();
    step_mut(&mut e).measurement.blocks[0].norm *= 0.5;
    assert!(
        matches!(
            w.check(&e.event().unwrap(), &blob(honest)),
            Err(StepFault::Measurement { .. })
        ),
        "an under-reported norm"
    );

    // A block changed but left out of the measurement.
    let mut e = honest.clone();
    step_mut(&mut e).measurement.blocks.pop();
    assert!(matches!(
        w.check(&e.event().unwrap(), &blob(honest)),
        Err(StepFault::Measurement { .. })
    ));

    // A routed-out piece updated, the measurement and state made to match
    // the shipped delta: still refused, naming the piece.
    let (first, last, mut pieces) = decode_delta(&blob(honest)).unwrap();
    let layout = std::sync::Arc::new(cfg.settings.layout().unwrap());
    let out_piece = layout
        .pieces
        .iter()
        .position(|p| p.layer == 0)
        .expect("a first-layer piece") as u32;
    assert!(
        pieces.iter().all(|p| p.piece != out_piece),
        "the honest delta leaves it alone"
    );
    let mut xor = vec![0u32; layout.pieces[out_piece as usize].len()];
    xor[0] = 1 << 20;
    pieces.push(PieceDelta {
        piece: out_piece,
        xor,
    });
    pieces.sort_by_key(|p| p.piece);
    let forged = encode_delta(first, last, &pieces);
    let mut e = honest.clone();
    let s = step_mut(&mut e);
    s.delta_blob = blob_digest(&forged);
    let before = rebuild_before(&sink, &cfg, 2);
    let mut after = before.clone();
    tuner::blobs::apply(&mut after, &pieces).unwrap();
    s.measurement.blocks = tuner::campaign::block_measures(&layout, &pieces, &before, &after);
    s.measurement.model_state = after.state_digest(&campaign_record(&sink).base_model.state);
    match w.check(&e.event().unwrap(), &forged) {
        Err(StepFault::RoutedOut { piece }) => assert!(piece.starts_with("l00"), "{piece}"),
        other => panic!("a routed-out update: {other:?}"),
    }

    // An old step re-offered under the next link.
    let mut e = evs[0].clone();
    step_mut(&mut e).link = step_mut(&mut honest.clone()).link;
    assert!(matches!(
        w.check(&e.event().unwrap(), &blob(&evs[0])),
        Err(StepFault::Stale { .. })
    ));

    // Another event's blob, and a misstated final state.
    assert!(matches!(
        w.check(&honest.event().unwrap(), &blob(&evs[3])),
        Err(StepFault::BlobMismatch { .. })
    ));
    let mut e = honest.clone();
    step_mut(&mut e).measurement.model_state = Digest([7; 32]);
    assert!(matches!(
        w.check(&e.event().unwrap(), &blob(honest)),
        Err(StepFault::State { .. })
    ));
}

/// The adapters before event `k`, rebuilt from the blobs.
fn rebuild_before(sink: &MemorySink, cfg: &tuner::demo::DemoConfig, k: usize) -> tuner::lora::Adapters {
    let layout = std::sync::Arc::new(cfg.settings.layout().unwrap());
    let mut a = tuner::lora::Adapters::init(layout, tuner::lora::adapter_init_seed(cfg.settings.sketch_seed));
    for e in events(sink).iter().take(k) {
        let (_, _, d) = decode_delta(&sink.blobs[e.event().unwrap().delta_blob]).unwrap();
        tuner::blobs::apply(&mut a, &d).unwrap();
    }
    a
}

#[test]
fn a_co_signer_follows_composite_events_under_head_routing() {
    let mut cfg = config(
        3,
        4000,
        1,
        policy(RoutingGranularity::Head, EventGranularity::Epoch),
    );
    cfg.settings.max_steps = 12;
    cfg.settings.batch_size = 4;
    cfg.settings.lora.dropout = 0.1;
    let (out, sink) = fine_tune(&cfg);
    let evs = events(&sink);
    assert!(
        evs.iter().any(|e| matches!(e, EntryBody::Composite(_))),
        "epoch events are composites"
    );
    let mut wit = witness(&sink, &cfg);
    for (i, e) in evs.iter().enumerate() {
        let ev = e.event().unwrap();
        let checked = wit
            .check(&ev, &sink.blobs[ev.delta_blob])
            .unwrap_or_else(|f| panic!("event {i}: {f}"));
        wit.commit(checked);
    }
    assert_eq!(wit.state(), out.final_state);
}

#[test]
fn a_co_signer_follows_a_base_campaign_and_refuses_a_misreported_norm() {
    let cfg = config(
        2,
        4000,
        0,
        policy(RoutingGranularity::Layer, EventGranularity::Batch),
    );
    assert!(
        cfg.base_weights.is_none(),
        "the base is pretrained in its own campaign"
    );
    let mut base = MemorySink::default();
    let w = build(&cfg, &mut base, &mut |_, _| {}).unwrap();
    let campaign = campaign_record(&base);
    assert_ne!(
        campaign.recipe,
        Digest::ZERO,
        "the base campaign publishes its recipe"
    );
    let mut wit = tuner::witness::Witness::new(&campaign, &base.blobs[&campaign.recipe]).unwrap();
    assert!(matches!(wit, tuner::witness::Witness::Base(_)));
    let evs = events(&base);
    assert!(evs.len() >= 3, "{} composites", evs.len());
    for (i, e) in evs.iter().enumerate() {
        let ev = e.event().unwrap();
        let blob = &base.blobs[ev.delta_blob];
        if i == 1 {
            // The same event with one block's norm under-reported.
            let mut bad = e.clone();
            if let EntryBody::Composite(c) = &mut bad {
                c.measurement.blocks[0].norm *= 0.5;
            }
            assert!(matches!(
                wit.check(&bad.event().unwrap(), blob),
                Err(StepFault::Measurement { .. })
            ));
        }
        let checked = wit
            .check(&ev, blob)
            .unwrap_or_else(|f| panic!("composite {i}: {f}"));
        wit.commit(checked);
    }
    assert_eq!(
        wit.state(),
        w.spec.base.digest(),
        "the chain ends at the base the fine-tune names"
    );
    // Its records and close account for every position of the order drawn
    // over the considered set its recipe commits (every base source is
    // admitted here).
    let considered = tuner::witness::Witness::considered(&base.blobs[&campaign.recipe]).unwrap();
    assert_eq!(considered.len(), cfg.base_sources.len());
    let cd = provenance::Canonical::digest(&campaign);
    // A memory sink witnesses nothing: pretraining draws from its own seed.
    let seed = tuner::data::seeded_order(cfg.pretrain.seed);
    let order = provenance::order::Order::new(&considered, seed).unwrap();
    let mut acc = provenance::order::Accounting::new(order);
    let mut closed = false;
    for e in &base.entries {
        let ours = e.chain_link().is_some_and(|l| l.campaign == cd)
            || matches!(e, EntryBody::CampaignClose(c) if c.campaign == cd);
        if ours {
            acc.record(e, &mut |_, _| None).unwrap_or_else(|f| panic!("{f}"));
            closed |= matches!(e, EntryBody::CampaignClose(_));
        }
    }
    assert!(closed && acc.drawn() > 0);
}
