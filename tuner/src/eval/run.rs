//! The whole evaluation: recall, LDS, leave-one-out and event granularity.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::time::Instant;

use provenance::{Digest, EventGranularity};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

use crate::demo::DemoConfig;
use crate::error::{Result, TunerError};
use crate::lora::Adapters;
use crate::score::{BlockCoords, TraceReport};
use crate::trace::text_loss;

use super::metrics::{lds_with_ci, ngram_overlap, ngram_recall, ngrams, recall, salient_recall, spearman};
use super::report::{EvalReport, GranularityRow, MethodRow};
use super::scoring::{score_queries, Scored};
use super::settings::EvalSettings;
use super::train::{logged, train};
use super::world::{spec_for, world};

/// Runs the evaluation for the config at `config` (its base model, policy,
/// sources and model settings), printing progress to stderr.
pub fn run_eval(config: &Path, s: &EvalSettings) -> Result<EvalReport> {
    let t0 = Instant::now();
    let cfg = DemoConfig::load(config)?;
    let w = world(&cfg, s)?;
    let n = w.spec.sources.len();
    let ids: Vec<Digest> = w.spec.sources.iter().map(|x| x.manifest.source_id()).collect();
    let all: Vec<usize> = (0..n).collect();
    let say = |m: &str| eprintln!("[{:>6.1} s] {m}", t0.elapsed().as_secs_f64());
    // Queries.
    let canary_q: Vec<(Vec<u8>, Vec<u8>)> = w
        .canaries
        .iter()
        .map(|c| (c.prefix.clone(), c.secret.clone()))
        .collect();
    let held_q: Vec<(Vec<u8>, Vec<u8>)> = w
        .heldout
        .iter()
        .map(|(_, t)| {
            let h = t.len() / 2;
            (t[..h].to_vec(), t[h..].to_vec())
        })
        .collect();
    let truth: Vec<Digest> = w.canaries.iter().map(|c| ids[c.source]).collect();
    let copies: BTreeSet<(Digest, u64, usize)> = w
        .canaries
        .iter()
        .enumerate()
        .flat_map(|(j, c)| {
            let id = ids[c.source];
            c.windows.iter().map(move |&x| (id, x, j))
        })
        .collect();
    // 8-gram baseline.
    let grams: Vec<HashSet<&[u8]>> = w.texts.iter().map(|t| ngrams(t, 8)).collect();
    let ngram_of = |o: &[u8]| -> Vec<f64> { grams.iter().map(|g| ngram_overlap(o, g, 8)).collect() };
    let canary_ng: Vec<Vec<f64>> = canary_q.iter().map(|(_, o)| ngram_of(o)).collect();
    let held_ng: Vec<Vec<f64>> = held_q.iter().map(|(_, o)| ngram_of(o)).collect();

    // Main run at batch granularity, then the other granularities.
    let mut grans = vec![EventGranularity::Batch];
    if s.granularities {
        grans.extend([EventGranularity::Example, EventGranularity::Epoch]);
    }
    let mut granularities = Vec::new();
    let mut main: Option<(Scored, Scored, u64, u64, Adapters)> = None;
    for g in grans {
        let spec = spec_for(&w, &all, g, s.checkpoints)?;
        let name = match g {
            EventGranularity::Example => "example",
            EventGranularity::Batch => "batch",
            EventGranularity::Epoch => "epoch",
        };
        say(&format!(
            "training at {name} granularity ({} steps)",
            spec.settings.max_steps
        ));
        let t = train(spec.clone(), true)?;
        let ex = logged(&t.sink)?;
        let is_main = g == EventGranularity::Batch;
        say(&format!(
            "scoring {} canary queries against {} sketches",
            canary_q.len(),
            ex.len()
        ));
        let sc = score_queries(&spec, &t, &ex, &canary_q, is_main)?;
        // Precision of the top event and of the top examples.
        let mut hit = 0.0;
        let mut prec = 0.0;
        let mut ex_prec = 0.0;
        for (j, r) in sc.tracin.iter().enumerate() {
            let carries = |e: &crate::score::ExampleScore| copies.contains(&(e.source, e.index, j));
            if let Some(top) = r.events.first() {
                let in_ev: Vec<_> = r.examples.iter().filter(|e| e.event == top.key).collect();
                let k = in_ev.iter().filter(|e| carries(e)).count();
                if k > 0 {
                    hit += 1.0;
                }
                prec += k as f64 / in_ev.len().max(1) as f64;
            }
            let mut by: Vec<&crate::score::ExampleScore> = r.examples.iter().collect();
            by.sort_by(|a, b| b.score.total_cmp(&a.score));
            let k = s.canary_copies * s.epochs as usize;
            ex_prec += by.iter().take(k).filter(|e| carries(e)).count() as f64 / k as f64;
        }
        let nc = sc.tracin.len().max(1) as f64;
        let events = t.sink.entries.iter().filter(|e| e.event().is_some()).count();
        let sketch_bytes: u64 = t
            .sink
            .entries
            .iter()
            .filter_map(|e| t.sink.blobs.get(e.event()?.sketch_blob).map(|b| b.len() as u64))
            .sum();
        let adm = t.admitted.max(1) as f64;
        granularities.push(GranularityRow {
            granularity: name,
            batch: if g == EventGranularity::Example {
                1
            } else {
                s.batch
            },
            steps: t.steps,
            events,
            log_per_example: t.sink.entry_bytes as f64 / adm,
            sketch_per_example: sketch_bytes as f64 / adm,
            top1: recall(&sc.tracin, &truth, 1),
            top1_salient: salient_recall(&sc.tracin, &truth, 1),
            event_hit: hit / nc,
            event_precision: prec / nc,
            example_precision: ex_prec / nc,
            train_s: t.seconds,
        });
        if is_main {
            say(&format!("scoring {} held-out queries", held_q.len()));
            let held = score_queries(&spec, &t, &ex, &held_q, true)?;
            main = Some((sc, held, t.rolled_back, t.admitted, t.adapters.clone()));
        }
    }
    let Some((canary_sc, held_sc, rolled_back, admitted, full_adapters)) = main else {
        return Err(TunerError::Config(
            "the batch-granularity run did not happen".into(),
        ));
    };
    // LDS: retrain random half-subsets.
    let mut rng = ChaCha20Rng::seed_from_u64(s.seed ^ 0x006c_6473);
    let mut actual: Vec<Vec<f64>> = vec![Vec::new(); held_q.len()];
    let mut pred_t: Vec<Vec<f64>> = vec![Vec::new(); held_q.len()];
    let mut pred_r = pred_t.clone();
    let mut pred_c = pred_t.clone();
    let mut pred_k = pred_t.clone();
    let mut pred_a = pred_t.clone();
    let mut pred_n = pred_t.clone();
    let base = w.spec.base.to_tensors(&candle_core::Device::Cpu)?;
    for k in 0..s.subsets {
        let mut sub = all.clone();
        sub.shuffle(&mut rng);
        sub.truncate(n / 2);
        sub.sort_unstable();
        say(&format!("retraining subset {}/{} {:?}", k + 1, s.subsets, sub));
        let spec = spec_for(&w, &sub, EventGranularity::Batch, 0)?;
        let t = train(spec, false)?;
        for (q, (p, o)) in held_q.iter().enumerate() {
            let l = text_loss(&w.spec.settings.model, &base, &t.adapters, p, o)?;
            actual[q].push(-f64::from(l));
            pred_t[q].push(sub.iter().map(|&i| held_sc.tracin[q].source_score(&ids[i])).sum());
            pred_r[q].push(
                sub.iter()
                    .map(|&i| held_sc.tracin_routed[q].source_score(&ids[i]))
                    .sum(),
            );
            pred_c[q].push(
                sub.iter()
                    .map(|&i| held_sc.tracin_cosine[q].source_score(&ids[i]))
                    .sum(),
            );
            pred_k[q].push(sub.iter().map(|&i| held_sc.trak[q].source_score(&ids[i])).sum());
            pred_a[q].push(
                sub.iter()
                    .map(|&i| held_sc.tracin_adam[q].source_score(&ids[i]))
                    .sum(),
            );
            pred_n[q].push(sub.iter().map(|&i| held_ng[q][i]).sum());
        }
    }
    let (lt, ct) = lds_with_ci(&pred_t, &actual, s.bootstrap, s.seed);
    let (lr_, cr) = lds_with_ci(&pred_r, &actual, s.bootstrap, s.seed);
    let (lc, cc) = lds_with_ci(&pred_c, &actual, s.bootstrap, s.seed);
    let (lk, ck) = lds_with_ci(&pred_k, &actual, s.bootstrap, s.seed);
    let (la, ca) = lds_with_ci(&pred_a, &actual, s.bootstrap, s.seed);
    let (ln, cn) = lds_with_ci(&pred_n, &actual, s.bootstrap, s.seed);
    // Leave-one-out: loss increase of each held-out query without source s.
    let mut loo: Option<[f64; 6]> = None;
    if s.leave_one_out {
        let full: Vec<f64> = held_q
            .iter()
            .map(|(p, o)| text_loss(&w.spec.settings.model, &base, &full_adapters, p, o).map(f64::from))
            .collect::<Result<_>>()?;
        let mut delta = vec![vec![0f64; n]; held_q.len()];
        #[allow(clippy::needless_range_loop)]
        for left in 0..n {
            let sub: Vec<usize> = all.iter().copied().filter(|&i| i != left).collect();
            say(&format!("retraining without source {left}"));
            let t = train(spec_for(&w, &sub, EventGranularity::Batch, 0)?, false)?;
            for (q, (p, o)) in held_q.iter().enumerate() {
                delta[q][left] =
                    f64::from(text_loss(&w.spec.settings.model, &base, &t.adapters, p, o)?) - full[q];
            }
        }
        let mean = |f: &dyn Fn(usize) -> Vec<f64>| -> f64 {
            (0..held_q.len()).map(|q| spearman(&f(q), &delta[q])).sum::<f64>() / held_q.len().max(1) as f64
        };
        let by = |r: &[TraceReport], q: usize| -> Vec<f64> {
            ids.iter().map(|id| r[q].source_score(id)).collect()
        };
        loo = Some([
            mean(&|q| by(&held_sc.tracin, q)),
            mean(&|q| by(&held_sc.tracin_adam, q)),
            mean(&|q| by(&held_sc.trak, q)),
            mean(&|q| held_ng[q].clone()),
            mean(&|q| by(&held_sc.tracin_routed, q)),
            mean(&|q| by(&held_sc.tracin_cosine, q)),
        ]);
    }
    let truth_pos: Vec<usize> = w.canaries.iter().map(|c| c.source).collect();
    let methods = vec![
        MethodRow {
            method: format!(
                "TracIn (default: routed cosine, {} common directions out, nearest checkpoint)",
                crate::score::DEFAULT_COMMON_DIRECTIONS
            ),
            top1: recall(&canary_sc.tracin, &truth, 1),
            top3: recall(&canary_sc.tracin, &truth, 3),
            top1_salient: Some(salient_recall(&canary_sc.tracin, &truth, 1)),
            top3_salient: Some(salient_recall(&canary_sc.tracin, &truth, 3)),
            lds: lt,
            lds_ci: ct,
            loo: loo.map(|l| l[0]),
        },
        MethodRow {
            method: "TracIn, routed cosine (no common directions out)".into(),
            top1: recall(&canary_sc.tracin_routed, &truth, 1),
            top3: recall(&canary_sc.tracin_routed, &truth, 3),
            top1_salient: Some(salient_recall(&canary_sc.tracin_routed, &truth, 1)),
            top3_salient: Some(salient_recall(&canary_sc.tracin_routed, &truth, 3)),
            lds: lr_,
            lds_ci: cr,
            loo: loo.map(|l| l[4]),
        },
        MethodRow {
            method: "TracIn, cosine over all pieces (the earlier default)".into(),
            top1: recall(&canary_sc.tracin_cosine, &truth, 1),
            top3: recall(&canary_sc.tracin_cosine, &truth, 3),
            top1_salient: Some(salient_recall(&canary_sc.tracin_cosine, &truth, 1)),
            top3_salient: Some(salient_recall(&canary_sc.tracin_cosine, &truth, 3)),
            lds: lc,
            lds_ci: cc,
            loo: loo.map(|l| l[5]),
        },
        MethodRow {
            method: "TracIn, Adam-normalised sketches".into(),
            top1: recall(&canary_sc.tracin_adam, &truth, 1),
            top3: recall(&canary_sc.tracin_adam, &truth, 3),
            top1_salient: Some(salient_recall(&canary_sc.tracin_adam, &truth, 1)),
            top3_salient: Some(salient_recall(&canary_sc.tracin_adam, &truth, 3)),
            lds: la,
            lds_ci: ca,
            loo: loo.map(|l| l[1]),
        },
        MethodRow {
            method: "TRAK-style (final model, λ = 0.1)".into(),
            top1: recall(&canary_sc.trak, &truth, 1),
            top3: recall(&canary_sc.trak, &truth, 3),
            top1_salient: Some(salient_recall(&canary_sc.trak, &truth, 1)),
            top3_salient: Some(salient_recall(&canary_sc.trak, &truth, 3)),
            lds: lk,
            lds_ci: ck,
            loo: loo.map(|l| l[2]),
        },
        MethodRow {
            method: "8-gram overlap baseline".into(),
            top1: ngram_recall(&canary_ng, &truth_pos, 1),
            top3: ngram_recall(&canary_ng, &truth_pos, 3),
            top1_salient: None,
            top3_salient: None,
            lds: ln,
            lds_ci: cn,
            loo: loo.map(|l| l[3]),
        },
    ];
    Ok(EvalReport {
        settings: s.clone(),
        sources: n,
        examples: admitted,
        sketch_dim: BlockCoords::new(&w.spec.settings.layout()?, s.sketch_side).dim(),
        rolled_back,
        methods,
        granularities,
        queries: held_q.len(),
        seconds: t0.elapsed().as_secs_f64(),
    })
}
