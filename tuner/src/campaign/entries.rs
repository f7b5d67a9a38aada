//! The chain entries a session submits: the accumulated span's event, refusal aggregates, block measures.

use std::collections::BTreeMap;

use provenance::event::composite_root;
use provenance::{
    BlockMeasure, ChainLink, CompositeEvent, EntryBody, EventGranularity, Measurement, OrderSpan,
    RefusalAggregate, StepEvent,
};

use crate::blobs::{blob_digest, diff, encode_delta, encode_sketches, PieceDelta};
use crate::error::Result;
use crate::lora::{AdapterLayout, Adapters};
use crate::replay::AuditMaterial;
use crate::sink::{EventSink, Verdict};

use super::{Session, Stop};

impl Session {
    pub(super) fn link(&self) -> ChainLink {
        ChainLink {
            campaign: self.campaign_digest,
            seq: self.ledger.seq,
            prev: self.ledger.prev,
        }
    }

    /// Submits a chain entry; on commit advances the chain.
    pub(super) fn submit(&mut self, sink: &mut dyn EventSink, body: EntryBody) -> Result<Option<Stop>> {
        match sink.submit(&body)? {
            Verdict::Committed => {
                self.ledger.seq += 1;
                self.ledger.prev = body.digest();
                #[cfg(feature = "cheat")]
                crate::cheat::committed(&body);
                Ok(None)
            }
            Verdict::Refused { reason } if reason.contains(provenance::state::POLICY_SUPERSEDED) => {
                Ok(Some(Stop::PolicySuperseded { reason }))
            }
            Verdict::Refused { reason } => Ok(Some(Stop::CoSignerRefused {
                kind: body.kind().name(),
                reason,
            })),
        }
    }

    pub(super) fn maybe_epoch_end(
        &mut self,
        sink: &mut dyn EventSink,
        epoch_end: bool,
    ) -> Result<Option<Stop>> {
        if epoch_end {
            if let Some(stop) = self.flush_span(sink)? {
                return Ok(Some(stop));
            }
            if let Some(stop) = self.flush_aggregate(sink)? {
                return Ok(Some(stop));
            }
        }
        Ok(None)
    }

    /// Emits the accumulated span as one event.
    pub(super) fn flush_span(&mut self, sink: &mut dyn EventSink) -> Result<Option<Stop>> {
        let Some(span) = self.span.take() else {
            return Ok(None);
        };
        let last_step = self.st.step - 1;
        #[allow(unused_mut)]
        let mut deltas = diff(&span.start, &self.st.adapters);
        #[cfg(feature = "cheat")]
        let cheat = crate::cheat::at(span.first_step);
        #[cfg(feature = "cheat")]
        if cheat == Some(crate::cheat::Mode::RoutedOut) {
            crate::cheat::touch_routed_out(
                &self.prep.layout,
                self.spec.settings.model.heads,
                &span.records,
                &mut deltas,
            );
        }
        let delta = encode_delta(span.first_step, last_step, &deltas);
        let delta_d = blob_digest(&delta);
        let sketch = encode_sketches(self.prep.proj.dim(), &span.sketches);
        let sketch_d = blob_digest(&sketch);
        sink.put_blob(&delta_d, &delta)?;
        sink.put_blob(&sketch_d, &sketch)?;
        self.delta_bytes += delta.len() as u64;
        self.sketch_bytes += sketch.len() as u64;
        #[allow(unused_mut)]
        let mut measurement = Measurement {
            blocks: block_measures(&self.prep.layout, &deltas, &span.start, &self.st.adapters),
            optimizer_state: self.st.opt.digest(),
            model_state: self.state_digest(),
            loss: span.losses.iter().sum::<f32>() / span.losses.len().max(1) as f32,
            signals: span.signals,
        };
        #[cfg(feature = "cheat")]
        match cheat {
            Some(crate::cheat::Mode::RoutedOut) => {
                // What the shipped delta yields, stated consistently.
                let mut shipped = span.start.clone();
                crate::blobs::apply(&mut shipped, &deltas)?;
                measurement.blocks = block_measures(&self.prep.layout, &deltas, &span.start, &shipped);
                measurement.model_state = shipped.state_digest(&self.prep.base_digest);
            }
            Some(crate::cheat::Mode::UnderNorm) => {
                if let Some(b) = measurement.blocks.first_mut() {
                    b.norm *= 0.5;
                }
            }
            Some(crate::cheat::Mode::Memorisation) => {
                measurement.signals.extraction = crate::cheat::over_threshold(&self.spec.policy);
            }
            _ => {}
        }
        #[cfg(feature = "cheat")]
        if (span.first_step..=last_step)
            .any(|k| crate::cheat::replay_cheats(k).contains(&crate::cheat::Mode::HideSignal))
        {
            // The record states less than was measured, even when the
            // span's honest signals are already zero (nothing to hide).
            measurement.signals.loss_drop_z -= 1.0;
            measurement.signals.extraction = 0.0;
            measurement.signals.canary_exposure = 0.0;
        }
        let time = span.time;
        let order = OrderSpan {
            start: span.order_start,
            end: self.st.schedule.position,
        };
        let material = sink.wants_audit_material().then(|| AuditMaterial {
            seq: self.link().seq,
            opt_before: span.opt_start.clone(),
            windows: span
                .records
                .iter()
                .map(|r| {
                    self.sources
                        .iter()
                        .find(|s| s.id == r.source)
                        .map(|s| s.window(r.index).to_vec())
                        .unwrap_or_default()
                })
                .collect(),
            salts: span
                .admitted
                .keys()
                .map(|&i| (self.sources[i].id, self.sources[i].signed.salt))
                .collect(),
        });
        let composite = match self.spec.policy.event_granularity {
            EventGranularity::Example => false,
            EventGranularity::Batch => self.spec.policy.log_volume.composite_batching,
            EventGranularity::Epoch => true,
        };
        let body = if composite {
            EntryBody::Composite(CompositeEvent {
                version: 2,
                link: self.link(),
                order,
                first_step: span.first_step,
                last_step,
                policy: self.spec.campaign.policy,
                records_root: composite_root(&span.records),
                records: span.records,
                measurement,
                sketch_blob: sketch_d,
                delta_blob: delta_d,
                step_time: time,
            })
        } else {
            EntryBody::Step(StepEvent {
                version: 2,
                link: self.link(),
                order,
                step: span.first_step,
                policy: self.spec.campaign.policy,
                examples: span.records,
                measurement,
                sketch_blob: sketch_d,
                delta_blob: delta_d,
                step_time: time,
            })
        };
        #[cfg(feature = "cheat")]
        let body = match (cheat, crate::cheat::last()) {
            (Some(crate::cheat::Mode::Replay), Some(mut old)) => {
                match &mut old {
                    EntryBody::Step(e) => e.link = self.link(),
                    EntryBody::Composite(e) => e.link = self.link(),
                    _ => {}
                }
                old
            }
            _ => body,
        };
        if let Some(m) = &material {
            sink.audit_material(m)?;
        }
        if let Some(stop) = self.submit(sink, body)? {
            return Ok(Some(stop));
        }
        for (s, n) in span.admitted {
            *self.ledger.admitted.entry(s).or_default() += n;
        }
        if self.agg.is_empty() {
            self.committed = self.st.clone();
        }
        if self.spec.policy.event_granularity != EventGranularity::Epoch {
            return self.flush_aggregate(sink);
        }
        Ok(None)
    }

    pub(super) fn flush_aggregate(&mut self, sink: &mut dyn EventSink) -> Result<Option<Stop>> {
        let Some((first, last)) = self.agg_steps.take() else {
            return Ok(None);
        };
        #[allow(unused_mut)]
        let mut counts = provenance::refusal::counts(std::mem::take(&mut self.agg));
        #[cfg(feature = "cheat")]
        if crate::cheat::first_from(crate::cheat::Mode::Inflate, last) {
            if let Some(c) = counts.first_mut() {
                c.count += 1;
            }
        }
        let order = OrderSpan {
            start: self.agg_from,
            end: self.st.schedule.position,
        };
        let body = EntryBody::RefusalAggregate(RefusalAggregate {
            version: 2,
            link: self.link(),
            order,
            policy: self.spec.campaign.policy,
            first_step: first,
            last_step: last,
            counts,
            time: self.clock.now(),
        });
        if let Some(stop) = self.submit(sink, body)? {
            return Ok(Some(stop));
        }
        self.agg_from = order.end;
        if self.span.is_none() {
            self.committed = self.st.clone();
        }
        Ok(None)
    }
}

/// Per parameter block: the digest of its pieces' XOR deltas and the L2
/// norm of its change, for blocks that changed.
pub fn block_measures(
    layout: &AdapterLayout,
    deltas: &[PieceDelta],
    before: &Adapters,
    after: &Adapters,
) -> Vec<BlockMeasure> {
    let mut by: BTreeMap<u32, Vec<&PieceDelta>> = BTreeMap::new();
    for d in deltas {
        by.entry(layout.pieces[d.piece as usize].block())
            .or_default()
            .push(d);
    }
    by.into_iter()
        .map(|(block, ds)| {
            let mut bytes = Vec::new();
            let mut sq = 0f64;
            for d in ds {
                bytes.extend_from_slice(&d.piece.to_be_bytes());
                for w in &d.xor {
                    bytes.extend_from_slice(&w.to_le_bytes());
                }
                let i = d.piece as usize;
                for (a, b) in before.values[i].iter().zip(&after.values[i]) {
                    sq += (f64::from(*b) - f64::from(*a)).powi(2);
                }
            }
            BlockMeasure {
                block,
                delta_digest: blob_digest(&bytes),
                norm: sq.sqrt() as f32,
            }
        })
        .collect()
}
