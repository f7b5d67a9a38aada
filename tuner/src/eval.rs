//! `govtune-tuner eval trace`: how well traces find what a model learned
//! from, measured against planted canaries and against retraining.
//!
//! Method (details and the measured table: `docs/tracing.md`, README):
//!
//! 1. **Data.** Every source of the config (one play each) is cut into a
//!    training part (its first `train_windows` windows) and a held-out part
//!    (the following windows, never trained on). Distinct random canaries
//!    `prefix ‖ secret` (random letters) are planted into `canary_copies`
//!    random windows each of their source (round-robin over sources).
//! 2. **Governed fine-tune** with the full pipeline into a
//!    [`MemorySink`] (no node), checkpoints every `steps / checkpoints`
//!    steps; sketches, routing masks and snapshots come from the sink
//!    exactly as a node would serve them.
//! 3. **Canary recall.** Query: prompt = canary prefix, output = secret.
//!    Top-1 / top-3 source recall by per-source sum and by salient score
//!    ([`crate::score::SourceScore::salient`]) of TracIn (cosine), TracIn
//!    with Adam-normalised sketches, TRAK, and an 8-gram overlap baseline.
//! 4. **Linear datamodeling score** (source level). `subsets` random
//!    half-subsets of the sources are retrained from scratch with the same
//!    governed recipe; for each held-out query (prompt = first half of a
//!    held-out window, output = second half) the predicted effect of a
//!    subset is the sum of its sources' scores from the full run, the
//!    actual effect minus the query loss of the retrained model; LDS is the
//!    Spearman correlation across subsets, averaged over queries, with a
//!    95% bootstrap interval (resampling subsets and queries). The full run
//!    also retrains with each source left out (Spearman across sources
//!    between score and loss increase).
//! 5. **Event granularity.** The same fine-tune at example, batch and
//!    epoch granularity: log bytes per example against the precision of
//!    the top-ranked event for each canary (fraction of its examples that
//!    carry the canary) and example-level precision@copies.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use candle_core::Tensor;
use provenance::{Digest, EntryBody, EventGranularity};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::blobs::decode_sketches;
use crate::campaign::{build_campaign, CampaignSpec, Session, SimClock, Stop};
use crate::data::{manifest_for, DemoConsortium, SignedSource};
use crate::demo::{build, DemoConfig};
use crate::error::{Result, TunerError};
use crate::lora::{adapter_init_seed, Adapters};
use crate::score::{score, BlockCoords, LoggedExample, LrSchedule, Method, Preconditioner, TraceReport};
use crate::sink::MemorySink;
use crate::trace::{load_snapshot, query_gradients, text_loss};

/// What the evaluation runs.
#[derive(Debug, Clone)]
pub struct EvalSettings {
    /// Training windows per source.
    pub train_windows: usize,
    /// Held-out query windows per source.
    pub heldout_windows: usize,
    /// Planted canaries.
    pub canaries: usize,
    /// Windows carrying each canary.
    pub canary_copies: usize,
    /// Epochs.
    pub epochs: u64,
    /// Examples per step.
    pub batch: usize,
    /// Sketch side `s`.
    pub sketch_side: usize,
    /// Recorded checkpoints (plus the final model).
    pub checkpoints: u64,
    /// Random half-subsets retrained for the LDS.
    pub subsets: usize,
    /// Bootstrap resamples of the LDS interval.
    pub bootstrap: usize,
    /// Also retrain with each source left out.
    pub leave_one_out: bool,
    /// Also run example and epoch granularity.
    pub granularities: bool,
    /// Seed of canaries, subsets and bootstrap.
    pub seed: u64,
    /// Letters per canary secret.
    pub secret_len: usize,
    /// LoRA rank (None: the config's).
    pub rank: Option<usize>,
    /// Byte offset of canaries in their windows (None: random).
    pub canary_offset: Option<usize>,
}

impl EvalSettings {
    /// The full evaluation (about 10 minutes on 2 cores, release).
    pub fn full() -> Self {
        Self {
            train_windows: 96,
            heldout_windows: 4,
            canaries: 20,
            canary_copies: 4,
            epochs: 1,
            batch: 16,
            sketch_side: 4,
            checkpoints: 4,
            subsets: 32,
            bootstrap: 1000,
            leave_one_out: true,
            granularities: true,
            seed: 2026,
            secret_len: 30,
            rank: None,
            canary_offset: None,
        }
    }

    /// The CI-sized evaluation (a few minutes).
    pub fn quick() -> Self {
        Self {
            train_windows: 64,
            heldout_windows: 2,
            canaries: 20,
            canary_copies: 3,
            epochs: 1,
            batch: 16,
            sketch_side: 4,
            checkpoints: 2,
            subsets: 8,
            bootstrap: 200,
            leave_one_out: false,
            granularities: true,
            seed: 2026,
            secret_len: 30,
            rank: None,
            canary_offset: None,
        }
    }
}

/// A planted canary.
#[derive(Debug, Clone)]
pub struct PlantedCanary {
    /// Source position.
    pub source: usize,
    /// Prompt part.
    pub prefix: Vec<u8>,
    /// Output part.
    pub secret: Vec<u8>,
    /// Windows carrying it.
    pub windows: Vec<u64>,
}

/// Recall and LDS of one method.
#[derive(Debug, Clone)]
pub struct MethodRow {
    /// Method name.
    pub method: String,
    /// Canary top-1 source recall.
    pub top1: f64,
    /// Canary top-3 source recall.
    pub top3: f64,
    /// Canary top-1 source recall by salient score (None: not defined).
    pub top1_salient: Option<f64>,
    /// Canary top-3 source recall by salient score.
    pub top3_salient: Option<f64>,
    /// Mean LDS over held-out queries.
    pub lds: f64,
    /// 95% bootstrap interval of the LDS.
    pub lds_ci: (f64, f64),
    /// Mean over held-out queries of the Spearman correlation across
    /// sources between a source's score and the query-loss increase when
    /// it is left out (None when not run).
    pub loo: Option<f64>,
}

/// One event granularity's figures.
#[derive(Debug, Clone)]
pub struct GranularityRow {
    /// Granularity.
    pub granularity: &'static str,
    /// Examples per step.
    pub batch: usize,
    /// Committed steps.
    pub steps: u64,
    /// Events with sketches.
    pub events: usize,
    /// Entry bytes per admitted example.
    pub log_per_example: f64,
    /// Sketch bytes per admitted example.
    pub sketch_per_example: f64,
    /// Canary top-1 source recall (TracIn, sum).
    pub top1: f64,
    /// Canary top-1 source recall (TracIn, salient).
    pub top1_salient: f64,
    /// Share of canaries whose top event holds a copy.
    pub event_hit: f64,
    /// Mean fraction of the top event's examples that carry the canary.
    pub event_precision: f64,
    /// Mean fraction of the top `copies` examples that carry the canary.
    pub example_precision: f64,
    /// Governed training seconds.
    pub train_s: f64,
}

/// The evaluation's results.
#[derive(Debug, Clone)]
pub struct EvalReport {
    /// Settings used.
    pub settings: EvalSettings,
    /// Sources.
    pub sources: usize,
    /// Training examples.
    pub examples: u64,
    /// Sketch dimension.
    pub sketch_dim: usize,
    /// Steps rolled back for memorisation in the main run.
    pub rolled_back: u64,
    /// TracIn, TRAK, 8-gram rows.
    pub methods: Vec<MethodRow>,
    /// Per granularity.
    pub granularities: Vec<GranularityRow>,
    /// Held-out queries.
    pub queries: usize,
    /// Wall seconds.
    pub seconds: f64,
}

impl EvalReport {
    /// The report as Markdown tables.
    pub fn table(&self) -> String {
        let s = &self.settings;
        let mut o = format!(
            "{} sources, {} training examples, {} canaries x {} copies, {} epochs, batch {}, sketch side {} (dim {}), {} checkpoints + final, {} half-subsets retrained, {} held-out queries, {} steps rolled back; {:.0} s.\n\n",
            self.sources, self.examples, s.canaries, s.canary_copies, s.epochs, s.batch, s.sketch_side,
            self.sketch_dim, s.checkpoints, s.subsets, self.queries, self.rolled_back, self.seconds
        );
        o.push_str("| method | canary top-1 / top-3 source recall (sum) | canary top-1 / top-3 source recall (salient) | source LDS (95% CI) | leave-one-source-out Spearman |\n|---|---|---|---|---|\n");
        for m in &self.methods {
            let sal = match (m.top1_salient, m.top3_salient) {
                (Some(a), Some(b)) => format!("{a:.2} / {b:.2}"),
                _ => "n/a".into(),
            };
            let loo = m.loo.map_or("n/a".to_string(), |x| format!("{x:.2}"));
            o.push_str(&format!(
                "| {} | {:.2} / {:.2} | {} | {:.2} [{:.2}, {:.2}] | {} |\n",
                m.method, m.top1, m.top3, sal, m.lds, m.lds_ci.0, m.lds_ci.1, loo
            ));
        }
        if !self.granularities.is_empty() {
            o.push_str("\n| event granularity | batch | steps | events | log B/example | sketch B/example | top-1 source recall (sum / salient) | top event holds the canary | top event precision | example precision@copies | train s |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
            for g in &self.granularities {
                o.push_str(&format!(
                    "| {} | {} | {} | {} | {:.0} | {:.0} | {:.2} / {:.2} | {:.2} | {:.3} | {:.2} | {:.0} |\n",
                    g.granularity,
                    g.batch,
                    g.steps,
                    g.events,
                    g.log_per_example,
                    g.sketch_per_example,
                    g.top1,
                    g.top1_salient,
                    g.event_hit,
                    g.event_precision,
                    g.example_precision,
                    g.train_s
                ));
            }
        }
        o
    }
}

const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyz";

fn random_word(rng: &mut ChaCha20Rng, n: usize) -> Vec<u8> {
    (0..n).map(|_| LETTERS[rng.gen_range(0..LETTERS.len())]).collect()
}

/// Plants `n` distinct canaries, `copies` windows each, round-robin over
/// the sources' training texts.
pub fn plant(
    texts: &mut [Vec<u8>],
    window: usize,
    n: usize,
    copies: usize,
    secret_len: usize,
    offset: Option<usize>,
    seed: u64,
) -> Result<Vec<PlantedCanary>> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 0x6361_6e61);
    let mut used: BTreeSet<(usize, u64)> = BTreeSet::new();
    let mut out = Vec::with_capacity(n);
    for j in 0..n {
        let source = j % texts.len();
        let windows = (texts[source].len() / window) as u64;
        if windows < copies as u64 * (n / texts.len() + 1) as u64 {
            return Err(TunerError::Config("too few windows for the canaries".into()));
        }
        let mut prefix = random_word(&mut rng, 10);
        prefix.extend_from_slice(b" is ");
        let secret = random_word(&mut rng, secret_len);
        let c = [prefix.as_slice(), &secret].concat();
        if c.len() > window {
            return Err(TunerError::Config("the canary is longer than a window".into()));
        }
        let mut ws = Vec::with_capacity(copies);
        while ws.len() < copies {
            let w = rng.gen_range(0..windows);
            if used.insert((source, w)) {
                let r = rng.gen_range(0..=window - c.len());
                let off = offset.unwrap_or(r).min(window - c.len());
                let s = w as usize * window + off;
                texts[source][s..s + c.len()].copy_from_slice(&c);
                ws.push(w);
            }
        }
        ws.sort_unstable();
        out.push(PlantedCanary {
            source,
            prefix,
            secret,
            windows: ws,
        });
    }
    Ok(out)
}

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

fn ngrams(text: &[u8], n: usize) -> HashSet<&[u8]> {
    text.windows(n).collect()
}

/// Distinct `n`-grams of `query` found in `source`.
pub fn ngram_overlap(query: &[u8], source: &HashSet<&[u8]>, n: usize) -> f64 {
    ngrams(query, n).iter().filter(|g| source.contains(*g)).count() as f64
}

/// The world of one evaluation: base, policy, signed sources, queries.
struct EvalWorld {
    spec: CampaignSpec,
    texts: Vec<Vec<u8>>,
    canaries: Vec<PlantedCanary>,
    heldout: Vec<(usize, Vec<u8>)>,
    consortium_seed: u64,
}

fn sign(c: &DemoConsortium, cfg: &DemoConfig, texts: &[Vec<u8>], window: usize) -> Result<Vec<SignedSource>> {
    texts
        .iter()
        .zip(&cfg.sources)
        .enumerate()
        .map(|(i, (t, e))| {
            let salt = provenance::digest::tagged_hash_parts(
                provenance::ObjectKind::Blob,
                &[b"eval-salt", &(i as u64).to_be_bytes()],
            )
            .0;
            let manifest = manifest_for(t, window, &salt, &e.terms)?;
            let signature = c.sign_manifest(&manifest)?;
            Ok(SignedSource {
                manifest,
                signature,
                text: t.clone(),
                salt,
            })
        })
        .collect()
}

fn world(cfg: &DemoConfig, s: &EvalSettings) -> Result<EvalWorld> {
    let w = build(cfg, &mut MemorySink::default(), &mut |_, _| {})?;
    let window = cfg.settings.model.window();
    let mut texts = Vec::new();
    let mut heldout = Vec::new();
    for (i, e) in cfg.sources.iter().enumerate() {
        let t = std::fs::read(&e.path).map_err(|err| TunerError::io(&e.path, err))?;
        let n = s.train_windows * window;
        if t.len() < n + s.heldout_windows * window {
            return Err(TunerError::Config(format!(
                "{} is too short for {} training and {} held-out windows",
                e.path.display(),
                s.train_windows,
                s.heldout_windows
            )));
        }
        for h in 0..s.heldout_windows {
            heldout.push((i, t[n + h * window..n + (h + 1) * window].to_vec()));
        }
        texts.push(t[..n].to_vec());
    }
    let canaries = plant(
        &mut texts,
        window,
        s.canaries,
        s.canary_copies,
        s.secret_len,
        s.canary_offset,
        s.seed,
    )?;
    let mut spec = w.spec;
    spec.sources = sign(&w.consortium, cfg, &texts, window)?;
    spec.settings.sketch_side = s.sketch_side;
    spec.settings.batch_size = s.batch;
    spec.settings.epochs = s.epochs;
    if let Some(r) = s.rank {
        spec.settings.lora.rank = r;
        spec.settings.lora.alpha = 2.0 * r as f32;
    }
    spec.canaries.clear();
    Ok(EvalWorld {
        spec,
        texts,
        canaries,
        heldout,
        consortium_seed: cfg.consortium_seed,
    })
}

/// A spec for `sources` (positions) at `granularity`, with checkpoints.
fn spec_for(
    w: &EvalWorld,
    sources: &[usize],
    granularity: EventGranularity,
    checkpoints: u64,
) -> Result<CampaignSpec> {
    let mut spec = w.spec.clone();
    spec.sources = sources.iter().map(|&i| w.spec.sources[i].clone()).collect();
    spec.policy.event_granularity = granularity;
    let window = spec.settings.model.window();
    let examples: usize = sources.iter().map(|&i| w.texts[i].len() / window).sum();
    let batch = if granularity == EventGranularity::Example {
        1
    } else {
        spec.settings.batch_size
    };
    let steps = spec.settings.epochs * examples.div_ceil(batch) as u64;
    spec.settings.max_steps = steps;
    spec.settings.checkpoint_every = if checkpoints == 0 {
        0
    } else {
        (steps / (checkpoints + 1)).max(1)
    };
    let c = &spec.campaign;
    spec.campaign = build_campaign(
        &spec.settings,
        &spec.policy,
        c.operator.clone(),
        &c.name,
        c.purpose.clone(),
        c.base_model.campaign,
        c.base_model.state,
        c.created,
    )?;
    let _ = w.consortium_seed;
    Ok(spec)
}

/// A finished governed run.
struct Trained {
    sink: MemorySink,
    adapters: Adapters,
    states: Vec<(u64, Adapters)>,
    admitted: u64,
    steps: u64,
    rolled_back: u64,
    seconds: f64,
}

fn train(spec: CampaignSpec, keep: bool) -> Result<Trained> {
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
fn logged(sink: &MemorySink) -> Result<Vec<LoggedExample>> {
    let mut out = Vec::new();
    for (i, e) in sink.entries.iter().enumerate() {
        let (blob, records) = match e {
            EntryBody::Step(s) => (&s.sketch_blob, &s.examples),
            EntryBody::Composite(c) => (&c.sketch_blob, &c.records),
            _ => continue,
        };
        let bytes = sink
            .blobs
            .get(blob)
            .ok_or_else(|| TunerError::Sink("sketch blob missing".into()))?;
        let (_, recs) = decode_sketches(bytes)?;
        out.extend(crate::score::logged_examples(i as u64, recs, records)?);
    }
    Ok(out)
}

struct Scored {
    tracin: Vec<TraceReport>,
    tracin_routed: Vec<TraceReport>,
    tracin_cosine: Vec<TraceReport>,
    tracin_adam: Vec<TraceReport>,
    trak: Vec<TraceReport>,
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

fn score_queries(
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

fn recall(reports: &[TraceReport], truth: &[Digest], k: usize) -> f64 {
    let hits = reports
        .iter()
        .zip(truth)
        .filter(|(r, t)| r.sources.iter().take(k).any(|s| &s.source == *t))
        .count();
    hits as f64 / reports.len().max(1) as f64
}

fn salient_recall(reports: &[TraceReport], truth: &[Digest], k: usize) -> f64 {
    let hits = reports
        .iter()
        .zip(truth)
        .filter(|(r, t)| r.sources_by_salient().iter().take(k).any(|s| &s.source == *t))
        .count();
    hits as f64 / reports.len().max(1) as f64
}

fn ngram_recall(scores: &[Vec<f64>], truth: &[usize], k: usize) -> f64 {
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
        let events = t
            .sink
            .entries
            .iter()
            .filter(|e| matches!(e, EntryBody::Step(_) | EntryBody::Composite(_)))
            .count();
        let sketch_bytes: u64 = t
            .sink
            .entries
            .iter()
            .filter_map(|e| match e {
                EntryBody::Step(s) => t.sink.blobs.get(&s.sketch_blob).map(|b| b.len() as u64),
                EntryBody::Composite(c) => t.sink.blobs.get(&c.sketch_blob).map(|b| b.len() as u64),
                _ => None,
            })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spearman_matches_hand_values() {
        assert!((spearman(&[1.0, 2.0, 3.0, 4.0], &[10.0, 20.0, 30.0, 40.0]) - 1.0).abs() < 1e-12);
        assert!((spearman(&[1.0, 2.0, 3.0, 4.0], &[4.0, 3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        // d = (0, 1, -1): 1 - 6·2/(3·8) = 0.5.
        assert!((spearman(&[1.0, 2.0, 3.0], &[1.0, 3.0, 2.0]) - 0.5).abs() < 1e-12);
        assert_eq!(spearman(&[1.0, 1.0], &[1.0, 2.0]), 0.0);
    }

    #[test]
    fn planting_is_distinct_and_in_place() {
        let mut texts = vec![vec![b'.'; 65 * 40]; 3];
        let c = plant(&mut texts, 65, 6, 3, 12, None, 1).unwrap();
        let all: BTreeSet<Vec<u8>> = c
            .iter()
            .map(|c| [c.prefix.clone(), c.secret.clone()].concat())
            .collect();
        assert_eq!(all.len(), 6);
        for p in &c {
            let full = [p.prefix.as_slice(), &p.secret].concat();
            for &w in &p.windows {
                let win = &texts[p.source][w as usize * 65..(w as usize + 1) * 65];
                assert!(win.windows(full.len()).any(|x| x == full.as_slice()));
            }
        }
    }

    #[test]
    fn bootstrap_interval_brackets_the_point() {
        let pred: Vec<Vec<f64>> = (0..5)
            .map(|q| (0..10).map(|s| (s * (q + 1)) as f64).collect())
            .collect();
        let actual: Vec<Vec<f64>> = (0..5)
            .map(|q| {
                (0..10)
                    .map(|s| s as f64 + if s % 3 == q % 3 { 4.0 } else { 0.0 })
                    .collect()
            })
            .collect();
        let (p, (lo, hi)) = lds_with_ci(&pred, &actual, 200, 3);
        assert!(lo <= p && p <= hi && p > 0.5 && p < 1.0, "{lo} {p} {hi}");
    }
}
