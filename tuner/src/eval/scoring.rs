//! Scoring a run's queries with every evaluated method.

use std::collections::BTreeMap;

use candle_core::Tensor;

use crate::campaign::CampaignSpec;
use crate::error::Result;
use crate::lora::Adapters;
use crate::score::{score, BlockCoords, LoggedExample, LrSchedule, Method, Preconditioner, TraceReport};
use crate::trace::query_gradients;

use super::train::Trained;

pub(super) struct Scored {
    pub(super) tracin: Vec<TraceReport>,
    pub(super) tracin_routed: Vec<TraceReport>,
    pub(super) tracin_cosine: Vec<TraceReport>,
    pub(super) tracin_adam: Vec<TraceReport>,
    pub(super) trak: Vec<TraceReport>,
}

/// TracIn with routed normalisation only (no common directions).
fn tracin_routed() -> Method {
    Method::TracIn {
        unit: true,
        adam: false,
        routed: true,
        common: 0,
    }
}

pub(super) fn score_queries(
    spec: &CampaignSpec,
    t: &Trained,
    examples: &[LoggedExample],
    queries: &[(Vec<u8>, Vec<u8>)],
    with_trak: bool,
) -> Result<Scored> {
    let layout = spec.settings.layout()?;
    let coords = BlockCoords::new(&layout, spec.settings.sketch_side);
    let proj =
        crate::pergrad::Projection::new(&layout, spec.settings.sketch_seed, spec.settings.sketch_side)?;
    let base: BTreeMap<String, Tensor> = spec.base.to_tensors(&candle_core::Device::Cpu)?;
    let lr = LrSchedule::Constant(spec.settings.optim.lr);
    let pre = if with_trak {
        Some(Preconditioner::fit(
            &coords,
            examples,
            crate::score::DEFAULT_TRAK_LAMBDA,
            true,
        )?)
    } else {
        None
    };
    let adam = Preconditioner::fit_adam(&coords, examples)?;
    let common = Preconditioner::fit_common(&coords, examples, crate::score::DEFAULT_COMMON_DIRECTIONS)?;
    let states: Vec<(u64, &Adapters)> = t.states.iter().map(|(s, a)| (*s, a)).collect();
    let mut out = Scored {
        tracin: Vec::new(),
        tracin_routed: Vec::new(),
        tracin_cosine: Vec::new(),
        tracin_adam: Vec::new(),
        trak: Vec::new(),
    };
    for (p, o) in queries {
        let g = query_gradients(&spec.settings.model, &base, &states, &proj, p, o)?;
        out.tracin.push(score(
            &coords,
            &g,
            examples,
            &lr,
            Method::tracin(),
            Some(&common),
        )?);
        out.tracin_routed
            .push(score(&coords, &g, examples, &lr, tracin_routed(), None)?);
        out.tracin_cosine
            .push(score(&coords, &g, examples, &lr, Method::tracin_cosine(), None)?);
        out.tracin_adam.push(score(
            &coords,
            &g,
            examples,
            &lr,
            Method::tracin_adam(),
            Some(&adam),
        )?);
        if let Some(pre) = &pre {
            out.trak
                .push(score(&coords, &g, examples, &lr, Method::trak(), Some(pre))?);
        }
    }
    Ok(out)
}
