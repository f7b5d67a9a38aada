//! Scores one query against the logged examples, summed per source, event, step and block.

use std::collections::BTreeMap;

use provenance::Digest;

use crate::error::{Result, TunerError};

use super::coords::{inv_norm, inv_norm_scaled, unit_routed, BlockCoords, MaskCache};
use super::inputs::{canonical_order, check_dims, LoggedExample, LrSchedule, QueryGradient};
use super::linalg::project_out;
use super::method::Method;
use super::precondition::Preconditioner;
use super::report::{BlockScore, ExampleScore, KeyScore, SourceScore, TraceReport, SALIENT_FRACTION};

/// Scores one query against the logged examples. `pre` is required for
/// [`Method::Trak`] (fit it once with [`Preconditioner::fit`]) and ignored
/// for TracIn. The query gradients may come in any order.
pub fn score(
    coords: &BlockCoords,
    query: &[QueryGradient],
    examples: &[LoggedExample],
    lr: &LrSchedule,
    method: Method,
    pre: Option<&Preconditioner>,
) -> Result<TraceReport> {
    let dim = coords.dim();
    check_dims(coords, examples)?;
    if query.is_empty() {
        return Err(TunerError::Config("no query gradient".into()));
    }
    if let Some(q) = query.iter().find(|q| q.values.len() != dim) {
        return Err(TunerError::Config(format!(
            "query gradient at step {} has {} coordinates, the layout {dim}",
            q.step,
            q.values.len()
        )));
    }
    let mut qs: Vec<&QueryGradient> = query.iter().collect();
    qs.sort_by_key(|q| q.step);
    if qs.windows(2).any(|w| w[0].step == w[1].step) {
        return Err(TunerError::Config("two query gradients for one step".into()));
    }
    let nb = coords.blocks();
    // Per query checkpoint (TracIn) or once (TRAK): the per-block query.
    let unit = method.unit();
    let all = vec![true; coords.block_of.len()];
    let unit_query = |q: &QueryGradient| -> Vec<f32> {
        let s = inv_norm(coords, &q.values, &all, unit);
        q.values.iter().map(|&x| (f64::from(x) * s) as f32).collect()
    };
    let adam: Option<&[f64]> = if method.adam() {
        let pre =
            pre.ok_or_else(|| TunerError::Config("Adam TracIn needs a fitted preconditioner".into()))?;
        if pre.diag.len() != dim {
            return Err(TunerError::Config(
                "the preconditioner is not an Adam preconditioner of this layout".into(),
            ));
        }
        Some(&pre.diag)
    } else {
        None
    };
    let common: &[Vec<f64>] = if method.common() > 0 {
        let pre = pre.ok_or_else(|| {
            TunerError::Config("common-direction TracIn needs a fitted preconditioner".into())
        })?;
        if pre.common.len() != method.common() || pre.common.iter().any(|u| u.len() != dim) {
            return Err(TunerError::Config(
                "the preconditioner is not a common-direction preconditioner of this method and layout"
                    .into(),
            ));
        }
        if adam.is_some() {
            return Err(TunerError::Config(
                "Adam normalisation and common directions do not combine".into(),
            ));
        }
        &pre.common
    } else {
        &[]
    };
    let qblocks: Vec<Vec<Vec<f64>>> = match method {
        Method::TracIn { .. } if !common.is_empty() => qs
            .iter()
            .map(|q| {
                let mut v: Vec<f64> = q.values.iter().map(|&x| f64::from(x)).collect();
                project_out(&mut v, common);
                let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
                if n > 0.0 {
                    v.iter_mut().for_each(|x| *x /= n);
                }
                (0..nb)
                    .map(|b| {
                        let mut out = Vec::with_capacity(coords.pieces[b].len() * coords.side * coords.side);
                        for &p in &coords.pieces[b] {
                            out.extend_from_slice(&v[coords.piece_range(p)]);
                        }
                        out
                    })
                    .collect()
            })
            .collect(),
        Method::TracIn { .. } => qs
            .iter()
            .map(|q| {
                let v = unit_query(q);
                (0..nb).map(|b| coords.block_vec(b, &v, &all)).collect()
            })
            .collect(),
        Method::Trak { lambda, .. } => {
            let pre = pre.ok_or_else(|| TunerError::Config("TRAK needs a fitted preconditioner".into()))?;
            if pre.lambda.to_bits() != lambda.to_bits() || pre.unit != unit || pre.factors.len() != nb {
                return Err(TunerError::Config(
                    "the preconditioner was fitted with another damping, normalisation or layout".into(),
                ));
            }
            let last = qs[qs.len() - 1];
            vec![pre.apply(coords, &unit_query(last))]
        }
    };
    let order = canonical_order(examples);
    let masks = MaskCache::new(coords, examples);
    let s2 = coords.side * coords.side;
    // Routed normalisation: per query checkpoint and distinct mask,
    // `1 / ‖q‖` over the mask's pieces (the query is already unit over
    // all pieces).
    let routed_norm: Vec<Vec<f64>> = if method.routed() {
        qblocks
            .iter()
            .map(|qb| {
                masks
                    .masks
                    .iter()
                    .map(|m| {
                        let mut sq = 0f64;
                        for (b, pieces) in coords.pieces.iter().enumerate() {
                            for (j, &p) in pieces.iter().enumerate() {
                                if m[p] {
                                    sq += qb[b][j * s2..(j + 1) * s2].iter().map(|x| x * x).sum::<f64>();
                                }
                            }
                        }
                        if sq > 0.0 {
                            1.0 / sq.sqrt()
                        } else {
                            0.0
                        }
                    })
                    .collect()
            })
            .collect()
    } else {
        Vec::new()
    };
    let mut out_examples = Vec::with_capacity(examples.len());
    let mut per_block_total = vec![0f64; nb];
    let mut sources: BTreeMap<Digest, SourceScore> = BTreeMap::new();
    let mut events: BTreeMap<u64, KeyScore> = BTreeMap::new();
    let mut steps: BTreeMap<u64, KeyScore> = BTreeMap::new();
    let mut eb = vec![0f64; nb];
    for &i in &order {
        let e = &examples[i];
        let mask = masks.get(i);
        let (qi, factor) = match method {
            Method::TracIn { .. } => (nearest(&qs, e.step), f64::from(lr.at(e.step)?)),
            Method::Trak { .. } => (0, 1.0),
        };
        // Common directions: the example's unit routed sketch with them
        // projected out, restricted to its routed pieces again.
        let projected: Option<Vec<f64>> = if common.is_empty() {
            None
        } else {
            let mut z = unit_routed(coords, &e.values, mask);
            project_out(&mut z, common);
            for (p, &on) in mask.iter().enumerate() {
                if !on {
                    z[coords.piece_range(p)].iter_mut().for_each(|x| *x = 0.0);
                }
            }
            let n = z.iter().map(|x| x * x).sum::<f64>().sqrt();
            if n > 0.0 {
                z.iter_mut().for_each(|x| *x /= n);
            }
            Some(z)
        };
        let mut factor = match projected {
            Some(_) => factor,
            None => factor * inv_norm_scaled(coords, &e.values, mask, unit, adam),
        };
        if let Some(r) = routed_norm.get(qi) {
            factor *= r[masks.of[i]];
        }
        let qb = &qblocks[qi];
        let mut total = 0f64;
        for (b, slot) in eb.iter_mut().enumerate() {
            let mut acc = 0f64;
            for (j, &p) in coords.pieces[b].iter().enumerate() {
                if !mask[p] {
                    continue;
                }
                let ev = &e.values[p * s2..(p + 1) * s2];
                let qv = &qb[b][j * s2..(j + 1) * s2];
                if let Some(z) = &projected {
                    for (x, y) in z[p * s2..(p + 1) * s2].iter().zip(qv) {
                        acc += x * y;
                    }
                    continue;
                }
                match adam {
                    None => {
                        for (x, y) in ev.iter().zip(qv) {
                            acc += f64::from(*x) * y;
                        }
                    }
                    Some(d) => {
                        let dv = &d[p * s2..(p + 1) * s2];
                        for ((x, y), z) in ev.iter().zip(qv).zip(dv) {
                            acc += f64::from(*x) * z * y;
                        }
                    }
                }
            }
            *slot = factor * acc;
            total += *slot;
        }
        for (t, x) in per_block_total.iter_mut().zip(&eb) {
            *t += x;
        }
        let s = sources.entry(e.source).or_insert_with(|| SourceScore {
            source: e.source,
            score: 0.0,
            salient: 0.0,
            examples: 0,
            blocks: vec![0.0; nb],
        });
        s.score += total;
        s.examples += 1;
        for (t, x) in s.blocks.iter_mut().zip(&eb) {
            *t += x;
        }
        for (map, key) in [(&mut events, e.event), (&mut steps, e.step)] {
            let k = map.entry(key).or_insert(KeyScore {
                key,
                score: 0.0,
                examples: 0,
            });
            k.score += total;
            k.examples += 1;
        }
        out_examples.push(ExampleScore {
            source: e.source,
            index: e.index,
            step: e.step,
            event: e.event,
            score: total,
        });
    }
    let mut sorted: Vec<f64> = out_examples.iter().map(|e| e.score).collect();
    sorted.sort_by(|a, b| b.total_cmp(a));
    // At least 2, so that in a small campaign (n < 100) the top example's
    // excess over the next one still counts.
    let n = sorted.len();
    let k = ((SALIENT_FRACTION * n as f64).ceil() as usize).clamp(2.min(n).max(1), n.max(1));
    let salient_threshold = sorted.get(k - 1).copied().unwrap_or(0.0);
    for e in &out_examples {
        if e.score > salient_threshold {
            if let Some(s) = sources.get_mut(&e.source) {
                s.salient += e.score - salient_threshold;
            }
        }
    }
    let mut sources: Vec<SourceScore> = sources.into_values().collect();
    sources.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.source.cmp(&b.source)));
    let mut events: Vec<KeyScore> = events.into_values().collect();
    events.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.key.cmp(&b.key)));
    let abs: f64 = per_block_total.iter().map(|x| x.abs()).sum();
    let mut blocks: Vec<BlockScore> = per_block_total
        .iter()
        .enumerate()
        .map(|(b, &s)| BlockScore {
            block: b as u32,
            score: s,
            share: if abs > 0.0 { s.abs() / abs } else { 0.0 },
        })
        .collect();
    blocks.sort_by(|a, b| b.share.total_cmp(&a.share).then(a.block.cmp(&b.block)));
    Ok(TraceReport {
        method,
        examples: out_examples,
        sources,
        salient_threshold,
        events,
        steps: steps.into_values().collect(),
        blocks,
    })
}

/// Index (in step order) of the query checkpoint nearest to `step`; ties
/// go to the earlier checkpoint.
fn nearest(qs: &[&QueryGradient], step: u64) -> usize {
    let mut best = 0;
    for (i, q) in qs.iter().enumerate() {
        if q.step.abs_diff(step) < qs[best].step.abs_diff(step) {
            best = i;
        }
    }
    best
}
