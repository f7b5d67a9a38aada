//! Opening, running and closing a session, and what it exposes of its state.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use candle_core::Tensor;
use provenance::Canonical;
use provenance::{CampaignClose, Digest, EntryBody, SourceCount};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

use crate::blobs::blob_digest;
use crate::compute::{probe_losses, Prepared};
use crate::data::{PreparedSource, Schedule};
use crate::error::{Result, TunerError};
use crate::lora::Adapters;
use crate::optim::AdamW;
use crate::pergrad::Projection;
use crate::sink::{EventSink, Verdict};

use super::{
    CampaignOutcome, CampaignSpec, Clock, Ledger, Progress, ProgressInfo, Session, SnapshotRef, Stop,
    TrainState,
};

impl Session {
    /// Prepares the campaign and submits its
    /// [`Campaign`](provenance::Campaign) entry.
    pub fn open(
        spec: CampaignSpec,
        clock: Box<dyn Clock>,
        sink: &mut dyn EventSink,
    ) -> Result<(Self, Verdict)> {
        let s = &spec.settings;
        if s.batch_size == 0 || spec.probe.len() < 2 {
            return Err(TunerError::Config(
                "batch_size must be positive and the probe set hold at least 2 windows".into(),
            ));
        }
        if spec.base.config != s.model {
            return Err(TunerError::ModelMismatch(
                "base weights are for another architecture".into(),
            ));
        }
        let layout = Arc::new(s.layout()?);
        if spec.campaign.architecture != s.model.architecture_digest()
            || spec.campaign.sketch.dim as usize != Projection::dim_for(&layout, s.sketch_side)
            || spec.campaign.sketch.seed != s.sketch_seed
            || spec.campaign.policy != spec.policy.digest()
            || spec.campaign.base_model.state != spec.base.digest()
        {
            return Err(TunerError::Config(
                "the campaign record does not match the settings, policy or base model".into(),
            ));
        }
        let window = s.model.window();
        if spec.probe.iter().any(|p| p.len() != window) {
            return Err(TunerError::Config(format!(
                "probe windows must be {window} bytes"
            )));
        }
        let sources = spec
            .sources
            .iter()
            .cloned()
            .map(|src| PreparedSource::new(src, window))
            .collect::<Result<Vec<_>>>()?;
        let prep = Prepared::new(s, &spec.base, spec.probe.clone(), spec.canaries.clone())?;
        let (adapters, opt) = prep.initial();
        let probe_before = probe_losses(&prep.ctx(), &adapters)?;
        let campaign_digest = spec.campaign.digest();
        let verdict = sink.submit(&EntryBody::Campaign(spec.campaign.clone()))?;
        // The order is drawn from randomness fixed after the campaign
        // committed (a refused campaign takes no step).
        #[allow(unused_mut)]
        let mut seed = match verdict {
            Verdict::Committed => sink.order_seed(&campaign_digest)?,
            Verdict::Refused { .. } => None,
        }
        .unwrap_or_else(|| crate::data::seeded_order(s.seed));
        #[cfg(feature = "cheat")]
        if crate::cheat::on(crate::cheat::Mode::OwnSeed) {
            // Any seed the operator picks: its settings'.
            seed = crate::data::seeded_order(s.seed);
        }
        let st = TrainState {
            adapters,
            opt,
            step: 0,
            rng: ChaCha20Rng::seed_from_u64(s.seed ^ 0x6472_6f70),
            schedule: Schedule::new(&sources, seed)?,
            probe_before,
            attempts: 0,
        };
        let me = Self {
            prep,
            sources,
            campaign_digest,
            committed: st.clone(),
            st,
            ledger: Ledger::default(),
            span: None,
            agg: BTreeMap::new(),
            agg_steps: None,
            agg_from: 0,
            clock,
            rolled_back: 0,
            sketch_bytes: 0,
            delta_bytes: 0,
            snapshots: Vec::new(),
            last_loss: f32::NAN,
            last_exposure: 0.0,
            started: Instant::now(),
            done: false,
            spec,
        };
        Ok((me, verdict))
    }

    /// The campaign digest.
    pub fn campaign_digest(&self) -> Digest {
        self.campaign_digest
    }

    /// The adapters at the current (committed) state.
    pub fn adapters(&self) -> &Adapters {
        &self.st.adapters
    }

    /// The base weights' tensors.
    pub fn base_tensors(&self) -> &BTreeMap<String, Tensor> {
        &self.prep.base
    }

    /// The sketch projection.
    pub fn projection(&self) -> &Projection {
        &self.prep.proj
    }

    /// The optimizer.
    pub fn optimizer(&self) -> &AdamW {
        &self.st.opt
    }

    /// The model-state digest now.
    pub fn state_digest(&self) -> Digest {
        self.st.adapters.state_digest(&self.prep.base_digest)
    }

    /// Committed steps.
    pub fn steps(&self) -> u64 {
        self.st.step
    }

    /// The next step it takes (after a refusal: the refused one).
    pub fn next_step(&self) -> u64 {
        self.st.step
    }

    pub(super) fn stop_at_committed(&mut self) {
        self.st = self.committed.clone();
        self.span = None;
        self.agg.clear();
        self.agg_steps = None;
    }

    fn progress_info(&self) -> ProgressInfo {
        ProgressInfo {
            step: self.st.step,
            attempts: self.st.attempts,
            loss: self.last_loss,
            exposure: self.last_exposure,
            admitted: self.ledger.admitted.values().sum(),
            refused: self.ledger.refused.values().sum(),
            rolled_back: self.rolled_back,
            events: self.ledger.seq,
            elapsed: self.started.elapsed().as_secs_f64(),
        }
    }

    /// Runs steps until finished or stopped by a co-signer.
    pub fn run(&mut self, sink: &mut dyn EventSink, progress: &mut dyn Progress) -> Result<Stop> {
        while !self.done {
            if self.st.attempts >= self.spec.settings.max_steps
                || self.st.schedule.epoch() >= self.spec.settings.epochs
            {
                self.done = true;
                break;
            }
            if let Some(stop) = self.step(sink)? {
                self.stop_at_committed();
                return Ok(stop);
            }
            progress.update(&self.progress_info());
        }
        if let Some(stop) = self.flush_span(sink)? {
            self.stop_at_committed();
            self.done = false;
            return Ok(stop);
        }
        if let Some(stop) = self.flush_aggregate(sink)? {
            self.stop_at_committed();
            self.done = false;
            return Ok(stop);
        }
        Ok(Stop::Finished)
    }

    /// Submits the CampaignClose and reports the outcome.
    pub fn close(mut self, sink: &mut dyn EventSink, stop: Stop) -> Result<CampaignOutcome> {
        let final_state = self.state_digest();
        let mut close = None;
        if matches!(stop, Stop::Finished | Stop::PolicySuperseded { .. }) {
            let snap = self.st.adapters.snapshot_bytes()?;
            let d = blob_digest(&snap);
            sink.put_blob(&d, &snap)?;
            if self.snapshots.last().map(|s| s.step) != Some(self.st.step) {
                self.snapshots.push(SnapshotRef {
                    step: self.st.step,
                    state: final_state,
                    blob: d,
                });
            }
            let ids: Vec<(Digest, usize)> = self.sources.iter().enumerate().map(|(i, s)| (s.id, i)).collect();
            let mut per: BTreeMap<Digest, SourceCount> = BTreeMap::new();
            for (id, i) in ids {
                let e = per.entry(id).or_insert(SourceCount {
                    source: id,
                    admitted: 0,
                    refused: 0,
                });
                e.admitted += self.ledger.admitted.get(&i).copied().unwrap_or(0);
                e.refused += self.ledger.refused.get(&i).copied().unwrap_or(0);
            }
            let c = CampaignClose {
                version: 2,
                campaign: self.campaign_digest,
                head: self.ledger.prev,
                entries: self.ledger.seq,
                steps: self.st.step,
                per_source: per.into_values().collect(),
                final_state,
                order_end: self.st.schedule.position,
                time: self.clock.now(),
            };
            if let Verdict::Refused { reason } = sink.submit(&EntryBody::CampaignClose(c.clone()))? {
                return Err(TunerError::Sink(format!(
                    "the campaign close was refused: {reason}"
                )));
            }
            close = Some(c);
        }
        let info = self.progress_info();
        Ok(CampaignOutcome {
            campaign: self.campaign_digest,
            stop,
            steps: self.st.step,
            attempts: self.st.attempts,
            admitted: info.admitted,
            refused: info.refused,
            rolled_back: self.rolled_back,
            final_state,
            head: self.ledger.prev,
            entries: self.ledger.seq,
            sketch_bytes: self.sketch_bytes,
            delta_bytes: self.delta_bytes,
            snapshots: self.snapshots,
            close,
        })
    }
}
