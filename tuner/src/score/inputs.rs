//! What a score is computed from: learning rates, query gradients and logged examples.

use provenance::{Digest, ExampleRecord, RoutingMask};

use crate::blobs::SketchRecord;
use crate::error::{Result, TunerError};

use super::coords::BlockCoords;

/// The learning rate applied at each step.
#[derive(Debug, Clone, PartialEq)]
pub enum LrSchedule {
    /// The same rate at every step.
    Constant(f32),
    /// Rate of step `t` at index `t`.
    PerStep(Vec<f32>),
}

impl LrSchedule {
    /// The rate at `step`.
    pub fn at(&self, step: u64) -> Result<f32> {
        match self {
            LrSchedule::Constant(lr) => Ok(*lr),
            LrSchedule::PerStep(v) => usize::try_from(step)
                .ok()
                .and_then(|i| v.get(i))
                .copied()
                .ok_or_else(|| TunerError::Config(format!("no learning rate for step {step}"))),
        }
    }
}

/// The query's projected gradient on the model after `step` committed
/// steps.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryGradient {
    /// Committed steps of the model state (0: initial adapters).
    pub step: u64,
    /// Sketch coordinates (the campaign projection, all pieces).
    pub values: Vec<f32>,
}

/// One logged example: its sketch and where it was logged.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedExample {
    /// Source id.
    pub source: Digest,
    /// Example index in the source.
    pub index: u64,
    /// Training step.
    pub step: u64,
    /// The caller's key of the event that logged it (e.g. its chain
    /// sequence number).
    pub event: u64,
    /// Routing mask of its admission decision (`None`: every piece).
    pub routing: Option<RoutingMask>,
    /// Sketch coordinates.
    pub values: Vec<f32>,
}

/// Joins a sketch blob's records with the event's example records (same
/// order, as the tuner writes them) into [`LoggedExample`]s.
pub fn logged_examples(
    event: u64,
    sketches: Vec<SketchRecord>,
    records: &[ExampleRecord],
) -> Result<Vec<LoggedExample>> {
    if sketches.len() != records.len() {
        return Err(TunerError::Blob {
            kind: "sketch",
            reason: format!(
                "{} sketches for {} example records",
                sketches.len(),
                records.len()
            ),
        });
    }
    sketches
        .into_iter()
        .zip(records)
        .map(|(s, r)| {
            if s.source != r.source || s.index != r.index {
                return Err(TunerError::Blob {
                    kind: "sketch",
                    reason: format!("sketch of example {} does not match the event's record", s.index),
                });
            }
            Ok(LoggedExample {
                source: s.source,
                index: s.index,
                step: s.step,
                event,
                routing: Some(r.decision.routing.clone()),
                values: s.values,
            })
        })
        .collect()
}

pub(super) fn check_dims(coords: &BlockCoords, examples: &[LoggedExample]) -> Result<()> {
    let dim = coords.dim();
    if let Some(e) = examples.iter().find(|e| e.values.len() != dim) {
        return Err(TunerError::Config(format!(
            "sketch of example {} has {} coordinates, the layout {dim}",
            e.index,
            e.values.len()
        )));
    }
    Ok(())
}

pub(super) fn canonical_order(examples: &[LoggedExample]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..examples.len()).collect();
    order.sort_by(|&a, &b| {
        let (x, y) = (&examples[a], &examples[b]);
        (x.step, x.source, x.index, x.event)
            .cmp(&(y.step, y.source, y.index, y.event))
            .then_with(|| {
                // Identical keys (never in a real campaign): fall back to
                // the values' bits so the order stays input-independent.
                let bx = x.values.iter().map(|v| v.to_bits());
                let by = y.values.iter().map(|v| v.to_bits());
                bx.cmp(by)
            })
    });
    order
}
