//! One governed step: admission, the batched pass, routing and clipping, AdamW, memorisation rollback.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};
use provenance::admission::{admit, check_memorisation, Admission, AdmissionContext};
use provenance::{
    AdmitDecision, EntryBody, EventGranularity, ExampleRecord, ExampleRef, MemorisationSignals, OrderSpan,
    Refusal, RefusalReason, Timestamp,
};
use rand::Rng;

use crate::blobs::{blob_digest, SketchRecord};
use crate::compute::{compute_step, Clipping, StepOutcome};
use crate::data::ExampleId;
use crate::error::Result;
use crate::sink::EventSink;

use super::{CampaignSpec, Session, SnapshotRef, Span, Stop};

fn granularity_batch(spec: &CampaignSpec) -> usize {
    match spec.policy.event_granularity {
        EventGranularity::Example => 1,
        _ => spec.settings.batch_size,
    }
}

impl Session {
    #[allow(clippy::type_complexity)]
    fn admit_batch(
        &self,
        batch: &[ExampleId],
        time: Timestamp,
    ) -> (
        Vec<(ExampleId, AdmitDecision)>,
        Vec<(ExampleId, RefusalReason, String)>,
    ) {
        let ctx = AdmissionContext {
            keyring: &self.spec.keyring,
            policy: &self.spec.policy,
            campaign: &self.spec.campaign,
            revocations: &self.spec.revocations,
            time,
        };
        let mut verdicts: BTreeMap<usize, Admission> = BTreeMap::new();
        let mut ok = Vec::new();
        let mut refused = Vec::new();
        for &e in batch {
            let v = verdicts.entry(e.source).or_insert_with(|| {
                let s = &self.sources[e.source].signed;
                admit(&ctx, &s.manifest, &s.signature)
            });
            match v {
                Admission::Admit(d) => ok.push((e, d.clone())),
                Admission::Refuse { reason, detail } => refused.push((e, *reason, detail.clone())),
            }
        }
        (ok, refused)
    }

    fn example_ref(&self, e: ExampleId) -> ExampleRef {
        let s = &self.sources[e.source];
        ExampleRef {
            source: s.id,
            index: e.index,
            example_hash: s.examples.hash(e.index).unwrap_or_default(),
        }
    }

    fn dropout_masks(&mut self, b: usize, t: usize) -> Result<Option<Vec<Tensor>>> {
        let p = self.spec.settings.lora.dropout;
        if p == 0.0 {
            return Ok(None);
        }
        let d = self.spec.settings.model.d_model;
        let keep = 1.0 / (1.0 - p);
        let mut out = Vec::new();
        for _ in 0..2 * self.spec.settings.model.layers {
            let v: Vec<f32> = (0..b * t * d)
                .map(|_| if self.st.rng.gen::<f32>() < p { 0.0 } else { keep })
                .collect();
            out.push(Tensor::from_vec(v, (b, t, d), &Device::Cpu)?);
        }
        Ok(Some(out))
    }

    /// One step. `Some(stop)` when a co-signer refused an entry.
    pub(super) fn step(&mut self, sink: &mut dyn EventSink) -> Result<Option<Stop>> {
        let b_max = granularity_batch(&self.spec);
        let (batch, span, epoch_end) = self.st.schedule.next_batch(b_max);
        self.step_on(sink, &batch, span, epoch_end)
    }

    /// One governed step on the given examples instead of the schedule's
    /// next batch (admission still decides what trains). `Some(stop)` when
    /// a co-signer refused an entry. Its records draw no position of the
    /// campaign's order, so a ledger's co-signers refuse them: this is for
    /// studying the step pipeline on a [`crate::sink::MemorySink`].
    pub fn train_on(&mut self, sink: &mut dyn EventSink, batch: &[ExampleId]) -> Result<Option<Stop>> {
        let r = self.step_on(sink, batch, OrderSpan::default(), false)?;
        if r.is_some() {
            self.stop_at_committed();
        }
        Ok(r)
    }

    fn step_on(
        &mut self,
        sink: &mut dyn EventSink,
        batch: &[ExampleId],
        order: OrderSpan,
        epoch_end: bool,
    ) -> Result<Option<Stop>> {
        let time = self.clock.now();
        #[allow(unused_mut)]
        let (mut admitted, refused) = self.admit_batch(batch, time);
        #[cfg(feature = "cheat")]
        if crate::cheat::at(self.st.step) == Some(crate::cheat::Mode::Skip) && admitted.len() > 1 {
            // Drawn, and neither trained nor refused.
            admitted.remove(0);
        }
        self.st.attempts += 1;
        let k = self.st.step;
        // Admission refusals.
        if !refused.is_empty() {
            for (e, _, _) in &refused {
                *self.ledger.refused.entry(e.source).or_default() += 1;
            }
            if self.spec.policy.log_volume.refusal_aggregation {
                for (e, r, _) in &refused {
                    *self.agg.entry((self.sources[e.source].id, *r)).or_default() += 1;
                }
                let (f, _) = self.agg_steps.unwrap_or((k, k));
                self.agg_steps = Some((f, k));
            } else {
                let mut by: BTreeMap<RefusalReason, (Vec<ExampleRef>, String)> = BTreeMap::new();
                for (e, r, d) in &refused {
                    let ent = by.entry(*r).or_insert_with(|| (Vec::new(), d.clone()));
                    ent.0.push(self.example_ref(*e));
                }
                for (reason, (examples, detail)) in by {
                    let body = EntryBody::Refusal(Refusal {
                        version: 2,
                        link: self.link(),
                        order,
                        step: k,
                        policy: self.spec.campaign.policy,
                        examples,
                        reason,
                        detail: detail.chars().take(1000).collect(),
                        measurement: None,
                        time,
                    });
                    if let Some(stop) = self.submit(sink, body)? {
                        return Ok(Some(stop));
                    }
                }
                self.committed.schedule = self.st.schedule.clone();
            }
        }
        if admitted.is_empty() {
            return self.maybe_epoch_end(sink, epoch_end);
        }
        // The governed step.
        let rng_before = self.st.rng.clone();
        let masks = self.dropout_masks(admitted.len(), self.spec.settings.model.context)?;
        let windows: Vec<&[u8]> = admitted
            .iter()
            .map(|(e, _)| self.sources[e.source].window(e.index))
            .collect();
        let decisions: Vec<&AdmitDecision> = admitted.iter().map(|(_, d)| d).collect();
        let ctx = self.prep.ctx();
        #[cfg(feature = "cheat")]
        let cheats = crate::cheat::replay_cheats(k);
        #[cfg(feature = "cheat")]
        let clipping = if cheats.contains(&crate::cheat::Mode::NoClip) {
            Clipping::Off
        } else {
            Clipping::On
        };
        #[cfg(not(feature = "cheat"))]
        let clipping = Clipping::On;
        #[allow(unused_mut)]
        let mut out = compute_step(
            &ctx,
            &self.st.adapters,
            &self.st.opt,
            &self.st.probe_before,
            &windows,
            &decisions,
            masks,
            clipping,
            k,
        )?;
        #[cfg(feature = "cheat")]
        {
            use crate::cheat::Mode;
            if cheats.contains(&Mode::ForgeSketch) {
                let scale = crate::cheat::forge_scale();
                for v in &mut out.sketches[0] {
                    *v *= scale;
                }
            }
            if cheats.contains(&Mode::HideSignal) {
                out.measurement.signals = MemorisationSignals::default();
            }
        }
        let StepOutcome {
            sketches,
            after,
            opt,
            probe_after,
            measurement,
            ..
        } = out;
        let signals = measurement.signals;
        let loss = measurement.loss;
        self.last_loss = loss;
        self.last_exposure = signals.canary_exposure;
        let before = std::mem::replace(&mut self.st.adapters, after);
        let opt_before = std::mem::replace(&mut self.st.opt, opt);
        if let Some(detail) = check_memorisation(&self.spec.policy, &signals) {
            // Roll back parameters, moments, step counter and RNG: the
            // state after a refused step is bit-identical to the state
            // before it, so replaying the committed record reproduces it.
            self.st.adapters = before;
            self.st.opt = opt_before;
            self.st.rng = rng_before;
            self.st.step = k;
            self.rolled_back += 1;
            for (e, _) in &admitted {
                *self.ledger.refused.entry(e.source).or_default() += 1;
            }
            let body = EntryBody::Refusal(Refusal {
                version: 2,
                link: self.link(),
                order,
                step: k,
                policy: self.spec.campaign.policy,
                examples: admitted.iter().map(|(e, _)| self.example_ref(*e)).collect(),
                reason: RefusalReason::Memorisation,
                detail,
                measurement: Some(measurement),
                time,
            });
            if let Some(stop) = self.submit(sink, body)? {
                return Ok(Some(stop));
            }
            if self.span.is_none() {
                self.committed = self.st.clone();
            }
            return self.maybe_epoch_end(sink, epoch_end);
        }
        // Commit the step into the current span.
        self.st.probe_before = probe_after;
        self.st.step = k + 1;
        let span = self.span.get_or_insert_with(|| Span {
            start: before,
            opt_start: opt_before,
            first_step: k,
            order_start: order.start,
            time,
            records: Vec::new(),
            sketches: Vec::new(),
            losses: Vec::new(),
            signals: MemorisationSignals::default(),
            admitted: BTreeMap::new(),
        });
        for (i, (e, d)) in admitted.iter().enumerate() {
            let s = &self.sources[e.source];
            span.records.push(ExampleRecord {
                source: s.id,
                index: e.index,
                example_hash: s.examples.hash(e.index).unwrap_or_default(),
                proof: s.examples.proof(e.index).map(|p| p.path).unwrap_or_default(),
                decision: d.clone(),
            });
            span.sketches.push(SketchRecord {
                source: s.id,
                index: e.index,
                step: k,
                values: sketches[i].clone(),
            });
            *span.admitted.entry(e.source).or_default() += 1;
        }
        span.losses.push(loss);
        span.time = time;
        span.signals.loss_drop_z = span.signals.loss_drop_z.max(signals.loss_drop_z);
        span.signals.extraction = span.signals.extraction.max(signals.extraction);
        span.signals.canary_exposure = span.signals.canary_exposure.max(signals.canary_exposure);
        if self.spec.settings.checkpoint_every > 0
            && self.st.step.is_multiple_of(self.spec.settings.checkpoint_every)
        {
            let snap = self.st.adapters.snapshot_bytes()?;
            let d = blob_digest(&snap);
            sink.put_blob(&d, &snap)?;
            self.snapshots.push(SnapshotRef {
                step: self.st.step,
                state: self.state_digest(),
                blob: d,
            });
        }
        if self.spec.policy.event_granularity != EventGranularity::Epoch {
            if let Some(stop) = self.flush_span(sink)? {
                return Ok(Some(stop));
            }
        }
        self.maybe_epoch_end(sink, epoch_end)
    }
}
