//! The evaluation's measures: Spearman, LDS with a bootstrap interval, recall@k, n-gram overlap.

use std::collections::HashSet;

use provenance::Digest;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::score::TraceReport;

/// Spearman rank correlation (average ranks for ties; 0 when a side is
/// constant).
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    fn ranks(v: &[f64]) -> Vec<f64> {
        let mut idx: Vec<usize> = (0..v.len()).collect();
        idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
        let mut r = vec![0.0; v.len()];
        let mut i = 0;
        while i < idx.len() {
            let mut j = i;
            while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
                j += 1;
            }
            for k in i..=j {
                r[idx[k]] = (i + j) as f64 / 2.0;
            }
            i = j + 1;
        }
        r
    }
    let (rx, ry) = (ranks(x), ranks(y));
    let n = x.len() as f64;
    let (mx, my) = (rx.iter().sum::<f64>() / n, ry.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in rx.iter().zip(&ry) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    if sxx == 0.0 || syy == 0.0 {
        0.0
    } else {
        sxy / (sxx * syy).sqrt()
    }
}

/// Mean over queries of the Spearman correlation across subsets between
/// `pred[q][subset]` and `actual[q][subset]`, restricted to the given
/// query and subset indices.
fn lds(pred: &[Vec<f64>], actual: &[Vec<f64>], queries: &[usize], subsets: &[usize]) -> f64 {
    let mut sum = 0.0;
    for &q in queries {
        let p: Vec<f64> = subsets.iter().map(|&s| pred[q][s]).collect();
        let a: Vec<f64> = subsets.iter().map(|&s| actual[q][s]).collect();
        sum += spearman(&p, &a);
    }
    sum / queries.len().max(1) as f64
}

/// LDS with a percentile bootstrap interval (resampling subsets and
/// queries with replacement).
pub fn lds_with_ci(pred: &[Vec<f64>], actual: &[Vec<f64>], resamples: usize, seed: u64) -> (f64, (f64, f64)) {
    let nq = pred.len();
    let ns = pred.first().map_or(0, Vec::len);
    let all_q: Vec<usize> = (0..nq).collect();
    let all_s: Vec<usize> = (0..ns).collect();
    let point = lds(pred, actual, &all_q, &all_s);
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut boots: Vec<f64> = (0..resamples)
        .map(|_| {
            let qs: Vec<usize> = (0..nq).map(|_| rng.gen_range(0..nq)).collect();
            let ss: Vec<usize> = (0..ns).map(|_| rng.gen_range(0..ns)).collect();
            lds(pred, actual, &qs, &ss)
        })
        .collect();
    boots.sort_by(f64::total_cmp);
    let at = |p: f64| boots[((p * (boots.len() - 1) as f64).round() as usize).min(boots.len() - 1)];
    if boots.is_empty() {
        return (point, (point, point));
    }
    (point, (at(0.025), at(0.975)))
}

pub(super) fn ngrams(text: &[u8], n: usize) -> HashSet<&[u8]> {
    text.windows(n).collect()
}

/// Distinct `n`-grams of `query` found in `source`.
pub fn ngram_overlap(query: &[u8], source: &HashSet<&[u8]>, n: usize) -> f64 {
    ngrams(query, n).iter().filter(|g| source.contains(*g)).count() as f64
}

pub(super) fn recall(reports: &[TraceReport], truth: &[Digest], k: usize) -> f64 {
    let hits = reports
        .iter()
        .zip(truth)
        .filter(|(r, t)| r.sources.iter().take(k).any(|s| &s.source == *t))
        .count();
    hits as f64 / reports.len().max(1) as f64
}

pub(super) fn salient_recall(reports: &[TraceReport], truth: &[Digest], k: usize) -> f64 {
    let hits = reports
        .iter()
        .zip(truth)
        .filter(|(r, t)| r.sources_by_salient().iter().take(k).any(|s| &s.source == *t))
        .count();
    hits as f64 / reports.len().max(1) as f64
}

pub(super) fn ngram_recall(scores: &[Vec<f64>], truth: &[usize], k: usize) -> f64 {
    let hits = scores
        .iter()
        .zip(truth)
        .filter(|(s, &t)| {
            let mut idx: Vec<usize> = (0..s.len()).collect();
            idx.sort_by(|&a, &b| s[b].total_cmp(&s[a]).then(a.cmp(&b)));
            idx.iter().take(k).any(|&i| i == t)
        })
        .count();
    hits as f64 / scores.len().max(1) as f64
}
