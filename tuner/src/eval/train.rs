//! Governed training runs into a memory sink, and the logged examples they leave.

use std::sync::Arc;
use std::time::Instant;

use crate::blobs::decode_sketches;
use crate::campaign::{CampaignSpec, Session, SimClock, Stop};
use crate::error::{Result, TunerError};
use crate::lora::{adapter_init_seed, Adapters};
use crate::score::LoggedExample;
use crate::sink::MemorySink;
use crate::trace::load_snapshot;

/// A finished governed run.
pub(super) struct Trained {
    pub(super) sink: MemorySink,
    pub(super) adapters: Adapters,
    pub(super) states: Vec<(u64, Adapters)>,
    pub(super) admitted: u64,
    pub(super) steps: u64,
    pub(super) rolled_back: u64,
    pub(super) seconds: f64,
}

pub(super) fn train(spec: CampaignSpec, keep: bool) -> Result<Trained> {
    let t0 = Instant::now();
    let mut sink = MemorySink {
        discard_blobs: !keep,
        ..Default::default()
    };
    let clock = SimClock {
        next: spec.campaign.created.0 + 1000,
        step_ms: 10,
    };
    let base_digest = spec.base.digest();
    let layout = Arc::new(spec.settings.layout()?);
    let init = Adapters::init(layout.clone(), adapter_init_seed(spec.settings.sketch_seed));
    let (mut session, _) = Session::open(spec, Box::new(clock), &mut sink)?;
    let stop = session.run(&mut sink, &mut ())?;
    if stop != Stop::Finished {
        return Err(TunerError::Sink(format!("evaluation run stopped: {stop:?}")));
    }
    let adapters = session.adapters().clone();
    let out = session.close(&mut sink, stop)?;
    let mut states = vec![(0, init)];
    if keep {
        for s in &out.snapshots {
            let bytes = sink
                .blobs
                .get(&s.blob)
                .ok_or_else(|| TunerError::Sink("snapshot blob missing".into()))?;
            states.push((
                s.step,
                load_snapshot(layout.clone(), &base_digest, bytes, &s.state)?,
            ));
        }
    }
    Ok(Trained {
        sink,
        adapters,
        states,
        admitted: out.admitted,
        steps: out.steps,
        rolled_back: out.rolled_back,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Logged examples of every event in the sink (event key = entry position).
pub(super) fn logged(sink: &MemorySink) -> Result<Vec<LoggedExample>> {
    let mut out = Vec::new();
    for (i, e) in sink.entries.iter().enumerate() {
        let Some(ev) = e.event() else { continue };
        let (blob, records) = (ev.sketch_blob, ev.records);
        let bytes = sink
            .blobs
            .get(blob)
            .ok_or_else(|| TunerError::Sink("sketch blob missing".into()))?;
        let (_, recs) = decode_sketches(bytes)?;
        out.extend(crate::score::logged_examples(i as u64, recs, records)?);
    }
    Ok(out)
}
