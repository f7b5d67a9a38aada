//! Governed against ungoverned fine-tuning: same model, data, steps, seed.
//!
//! The ungoverned loop is plain LoRA training: the adapters are candle
//! variables, one forward pass, the mean loss, one backward pass, AdamW on
//! every adapter. The governed loop is [`crate::campaign`] with its whole
//! pipeline (admission, probes, per-example norms and clipping, routing,
//! sketches, measurement, memorisation signals, blobs, entries).

use std::time::Instant;

use candle_core::{Device, Var};
use provenance::{EventGranularity, Timestamp};

use crate::campaign::{run, CampaignSpec, SimClock};
use crate::data::{PreparedSource, Schedule};
use crate::error::Result;
use crate::lora::{adapter_init_seed, Adapters, LoraForward};
use crate::model::{batch_tensors, forward, per_example_loss};
use crate::optim::AdamW;
use crate::pergrad::{reference, sq_norms, SiteTensors};
use crate::sink::MemorySink;

/// One row of the benchmark.
#[derive(Debug, Clone)]
pub struct Row {
    /// Event granularity.
    pub granularity: &'static str,
    /// Examples per step.
    pub batch: usize,
    /// Steps.
    pub steps: u64,
    /// Ungoverned seconds.
    pub ungoverned_s: f64,
    /// Governed seconds.
    pub governed_s: f64,
    /// Admitted examples.
    pub admitted: u64,
    /// Sketch bytes per admitted example.
    pub sketch_per_example: f64,
    /// Entry (log) bytes per admitted example.
    pub log_per_example: f64,
    /// Delta blob bytes per admitted example.
    pub delta_per_example: f64,
}

/// Times `steps` ungoverned LoRA steps.
pub fn ungoverned(spec: &CampaignSpec, batch: usize, steps: u64) -> Result<f64> {
    let s = &spec.settings;
    let layout = std::sync::Arc::new(s.layout()?);
    let dev = Device::Cpu;
    let base = spec.base.to_tensors(&dev)?;
    let sources = spec
        .sources
        .iter()
        .cloned()
        .map(|x| PreparedSource::new(x, s.model.window()))
        .collect::<Result<Vec<_>>>()?;
    let mut sched = Schedule::seeded(&sources, s.seed)?;
    let mut a = Adapters::init(layout.clone(), adapter_init_seed(s.sketch_seed));
    let mut opt = AdamW::new(s.optim, layout.pieces.iter().map(|p| p.len()));
    let t0 = Instant::now();
    for _ in 0..steps {
        let (ids, _, _) = sched.next_batch(batch);
        let windows: Vec<&[u8]> = ids.iter().map(|e| sources[e.source].window(e.index)).collect();
        let (inp, tgt) = batch_tensors(&windows, &dev)?;
        let vars = a
            .tensors(&dev)?
            .iter()
            .map(Var::from_tensor)
            .collect::<candle_core::Result<Vec<_>>>()?;
        let mut f = LoraForward::with_vars(layout.clone(), vars.clone(), None)?;
        let loss = per_example_loss(&forward(&s.model, &base, &inp, Some(&mut f))?, &tgt)?.mean_all()?;
        let g = loss.backward()?;
        let grads = vars
            .iter()
            .map(|v| {
                g.get(v.as_tensor())
                    .map(|t| t.flatten_all().and_then(|t| t.to_vec1::<f32>()))
                    .transpose()
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        opt.apply(&mut a.values, &grads);
    }
    Ok(t0.elapsed().as_secs_f64())
}

/// Times a governed campaign of `steps` steps at `granularity`.
pub fn governed(
    spec: &CampaignSpec,
    granularity: EventGranularity,
    batch: usize,
    steps: u64,
) -> Result<(f64, MemorySink, crate::campaign::CampaignOutcome)> {
    let mut spec = spec.clone();
    spec.policy.event_granularity = granularity;
    spec.settings.batch_size = batch;
    spec.settings.max_steps = steps;
    spec.settings.checkpoint_every = 0;
    spec.campaign.policy = provenance::Canonical::digest(&spec.policy);
    spec.campaign.checkpoint_steps.clear();
    let mut sink = MemorySink {
        discard_blobs: true,
        ..Default::default()
    };
    let t0 = Instant::now();
    let clock = SimClock {
        next: spec.campaign.created.0 + 1000,
        step_ms: 10,
    };
    let out = run(spec, Box::new(clock), &mut sink, &mut ())?;
    Ok((t0.elapsed().as_secs_f64(), sink, out))
}

/// A governed-vs-ungoverned row.
pub fn row(spec: &CampaignSpec, granularity: EventGranularity, batch: usize, steps: u64) -> Result<Row> {
    // Interleave to share machine noise: ungoverned, governed, ungoverned.
    let u1 = ungoverned(spec, batch, steps)?;
    let (g, sink, out) = governed(spec, granularity, batch, steps)?;
    let u2 = ungoverned(spec, batch, steps)?;
    let n = out.admitted.max(1) as f64;
    Ok(Row {
        granularity: match granularity {
            EventGranularity::Example => "example",
            EventGranularity::Batch => "batch",
            EventGranularity::Epoch => "epoch",
        },
        batch,
        steps,
        ungoverned_s: (u1 + u2) / 2.0,
        governed_s: g,
        admitted: out.admitted,
        sketch_per_example: out.sketch_bytes as f64 / n,
        log_per_example: sink.entry_bytes as f64 / n,
        delta_per_example: out.delta_bytes as f64 / n,
    })
}

/// Batched per-example norms against the batch-size-1 reference loop:
/// `(batched seconds, reference seconds)` over `reps` batches of `batch`.
pub fn per_example_paths(spec: &CampaignSpec, batch: usize, reps: usize) -> Result<(f64, f64)> {
    let s = &spec.settings;
    let layout = std::sync::Arc::new(s.layout()?);
    let dev = Device::Cpu;
    let base = spec.base.to_tensors(&dev)?;
    let src = PreparedSource::new(spec.sources[0].clone(), s.model.window())?;
    let a = Adapters::init(layout.clone(), adapter_init_seed(s.sketch_seed));
    let proj = crate::pergrad::Projection::new(&layout, s.sketch_seed, s.sketch_side)?;
    let windows: Vec<&[u8]> = (0..batch as u64).map(|i| src.window(i)).collect();
    let routed = vec![vec![true; batch]; layout.pieces.len()];
    let t0 = Instant::now();
    for _ in 0..reps {
        let (inp, tgt) = batch_tensors(&windows, &dev)?;
        let mut f = LoraForward::probing(&a, batch, s.model.context, None, &dev)?;
        let l = per_example_loss(&forward(&s.model, &base, &inp, Some(&mut f))?, &tgt)?.sum_all()?;
        let g = l.backward()?;
        let st = SiteTensors::collect(&f, &g)?;
        sq_norms(&layout, &st)?;
        proj.sketches(&layout, &st, &routed)?;
    }
    let batched = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    for _ in 0..reps {
        reference(&s.model, &base, &a, &windows, Some(&proj))?;
    }
    Ok((batched, t1.elapsed().as_secs_f64()))
}

/// What a co-signer's checks cost against the operator's step over a
/// governed campaign of `steps` batch steps.
#[derive(Debug, Clone, Copy)]
pub struct WitnessCost {
    /// Operator seconds per governed step.
    pub operator_step: f64,
    /// Effect check seconds per event.
    pub effect: f64,
    /// Events checked.
    pub events: usize,
    /// Order accounting seconds per record.
    pub order: f64,
    /// Records accounted.
    pub records: usize,
}

/// Measures [`WitnessCost`].
pub fn witness_cost(spec: &CampaignSpec, batch: usize, steps: u64) -> Result<WitnessCost> {
    let mut spec = spec.clone();
    spec.policy.event_granularity = EventGranularity::Batch;
    spec.settings.batch_size = batch;
    spec.settings.max_steps = steps;
    spec.settings.checkpoint_every = 0;
    spec.campaign.policy = provenance::Canonical::digest(&spec.policy);
    spec.campaign.checkpoint_steps.clear();
    let campaign = spec.campaign.clone();
    let data_seed = spec.settings.seed;
    let keyring = spec.keyring.clone();
    let policy = spec.policy.clone();
    let revocations = spec.revocations.clone();
    let manifests: std::collections::BTreeMap<provenance::Digest, provenance::DataSourceManifest> = spec
        .sources
        .iter()
        .map(|s| (s.manifest.source_id(), s.manifest.clone()))
        .collect();
    let recipe =
        crate::recipe::Recipe::new(spec.settings.clone(), b"", crate::data::considered(&spec.sources));
    let mut sink = MemorySink::default();
    let clock = SimClock {
        next: spec.campaign.created.0 + 1000,
        step_ms: 10,
    };
    let t0 = Instant::now();
    let out = run(spec, Box::new(clock), &mut sink, &mut ())?;
    let operator = t0.elapsed().as_secs_f64() / out.steps.max(1) as f64;
    let mut w = crate::witness::CampaignWitness::new(&campaign, &recipe)?;
    let events: Vec<_> = sink.entries.iter().filter(|e| e.event().is_some()).collect();
    let t1 = Instant::now();
    for e in &events {
        let Some(ev) = e.event() else { continue };
        let blob = sink.blobs.get(ev.delta_blob).cloned().unwrap_or_default();
        let checked = w.check(&ev, &blob).map_err(|f| {
            crate::error::TunerError::Config(format!("an honest event failed the check: {f}"))
        })?;
        w.commit(checked);
    }
    let check = t1.elapsed().as_secs_f64() / events.len().max(1) as f64;
    // The order accounting over every record (a memory sink: the order of
    // the settings' seed), with admission per source as a co-signer runs it
    // against its committed state.
    let order = provenance::order::Order::new(&recipe.considered, crate::data::seeded_order(data_seed))
        .map_err(|e| crate::error::TunerError::Config(e.to_string()))?;
    let mut acc = provenance::order::Accounting::new(order);
    let records: Vec<_> = sink.entries.iter().filter(|e| e.chain_link().is_some()).collect();
    let t2 = Instant::now();
    for r in &records {
        let mut reason_of = |source: &provenance::Digest, time: Timestamp| {
            let Some(m) = manifests.get(source) else {
                return Some(provenance::RefusalReason::BadSignature);
            };
            let ctx = provenance::AdmissionContext {
                keyring: &keyring,
                policy: &policy,
                campaign: &campaign,
                revocations: &revocations,
                time,
            };
            provenance::admit_committed(&ctx, m).refusal()
        };
        acc.record(r, &mut reason_of).map_err(|f| {
            crate::error::TunerError::Config(format!("an honest record failed the order check: {f}"))
        })?;
    }
    let order_s = t2.elapsed().as_secs_f64() / records.len().max(1) as f64;
    Ok(WitnessCost {
        operator_step: operator,
        effect: check,
        events: events.len(),
        order: order_s,
        records: records.len(),
    })
}

/// The benchmark table as Markdown.
pub fn table(spec: &CampaignSpec, batch: usize, steps: u64, example_steps: u64) -> Result<String> {
    let rows = [
        row(spec, EventGranularity::Batch, batch, steps)?,
        row(spec, EventGranularity::Example, 1, example_steps)?,
    ];
    let (b, r) = per_example_paths(spec, batch, 3)?;
    let w = witness_cost(spec, batch, steps)?;
    let (op_step, check, checked) = (w.operator_step, w.effect, w.events);
    let m = &spec.settings.model;
    let mut out = format!(
        "Model: {} layers, d={}, {} heads, context {}, {} base parameters, {} adapter parameters; sketch dim {}.\n\n",
        m.layers,
        m.d_model,
        m.heads,
        m.context,
        m.param_count(),
        s_layout_params(spec)?,
        spec.campaign.sketch.dim
    );
    out.push_str("| granularity | batch | steps | ungoverned s | governed s | ratio | sketch B/example | log B/example | delta B/example |\n|---|---|---|---|---|---|---|---|---|\n");
    for r in &rows {
        out.push_str(&format!(
            "| {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.0} | {:.0} | {:.0} |\n",
            r.granularity,
            r.batch,
            r.steps,
            r.ungoverned_s,
            r.governed_s,
            r.governed_s / r.ungoverned_s,
            r.sketch_per_example,
            r.log_per_example,
            r.delta_per_example
        ));
    }
    out.push_str(&format!(
        "\nPer-example norms + sketches for a batch of {batch}: batched pass {:.3} s, batch-size-1 reference loop {:.3} s (×{:.1}).\n",
        b / 3.0,
        r / 3.0,
        r / b
    ));
    out.push_str(&format!(
        "\nA co-signer's effect check (delta against measurement, routing and state chain; {checked} events): {:.2} ms per event against the operator's {:.0} ms per governed step ({:.2}% of it).\n",
        check * 1e3,
        op_step * 1e3,
        100.0 * check / op_step.max(f64::MIN_POSITIVE)
    ));
    out.push_str(&format!(
        "\nThe order accounting ({} records): {:.1} µs per record ({:.3}% of a governed step).\n",
        w.records,
        w.order * 1e6,
        100.0 * w.order / op_step.max(f64::MIN_POSITIVE)
    ));
    let _ = Timestamp(0);
    Ok(out)
}

fn s_layout_params(spec: &CampaignSpec) -> Result<usize> {
    Ok(spec.settings.layout()?.param_count())
}

/// Trace latency: one query against many logged example sketches.
#[derive(Debug, Clone)]
pub struct TraceLatency {
    /// Logged example sketches.
    pub examples: usize,
    /// Sketch dimension.
    pub dim: usize,
    /// Query model states (checkpoints + final).
    pub states: usize,
    /// Seconds to decode the sketch blob(s) of all examples.
    pub decode_s: f64,
    /// Seconds for the query's projected gradients on every state.
    pub query_grad_s: f64,
    /// Seconds per query, TracIn (plain cosine).
    pub tracin_s: f64,
    /// Seconds to fit the common sketch directions (once per campaign).
    pub common_fit_s: f64,
    /// Seconds per query, the default TracIn (routed cosine, common
    /// directions projected out).
    pub tracin_default_s: f64,
    /// Seconds to fit the Adam diagonal (once per campaign).
    pub adam_fit_s: f64,
    /// Seconds per query, Adam-normalised TracIn.
    pub tracin_adam_s: f64,
    /// Seconds to fit the TRAK preconditioner (once per campaign).
    pub trak_fit_s: f64,
    /// Seconds per query, TRAK-style.
    pub trak_s: f64,
}

/// Times scoring one query against `n` synthetic logged sketches (random
/// values; one example in eight routed to the last layer only) with the
/// campaign's layout and sketch side, and the query's gradients on
/// `checkpoints + 1` model states of the real base model.
pub fn trace_latency(spec: &CampaignSpec, n: usize, checkpoints: usize) -> Result<TraceLatency> {
    use crate::blobs::{decode_sketches, encode_sketches, SketchRecord};
    use crate::score::{score, BlockCoords, LoggedExample, LrSchedule, Method, Preconditioner};
    use rand::{Rng, SeedableRng};
    let s = &spec.settings;
    let layout = std::sync::Arc::new(s.layout()?);
    let coords = BlockCoords::new(&layout, s.sketch_side);
    let dim = coords.dim();
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(99);
    let sources: Vec<provenance::Digest> = (0..8u8).map(|i| provenance::Digest([i; 32])).collect();
    let records: Vec<SketchRecord> = (0..n)
        .map(|i| SketchRecord {
            source: sources[i % 8],
            index: (i / 8) as u64,
            step: (i / 16) as u64,
            values: (0..dim).map(|_| rng.gen::<f32>() - 0.5).collect(),
        })
        .collect();
    let blob = encode_sketches(dim, &records);
    drop(records);
    let t0 = Instant::now();
    let (_, decoded) = decode_sketches(&blob)?;
    let decode_s = t0.elapsed().as_secs_f64();
    drop(blob);
    let heads = s.model.heads;
    let units = (s.model.layers * (heads + 1)) as u32;
    let last = s.model.layers - 1;
    let shallow = provenance::RoutingMask::from_fn(provenance::RoutingGranularity::Head, units, |u| {
        u as usize / (heads + 1) == last
    });
    let examples: Vec<LoggedExample> = decoded
        .into_iter()
        .enumerate()
        .map(|(i, r)| LoggedExample {
            source: r.source,
            index: r.index,
            step: r.step,
            event: r.step,
            routing: (i % 8 == 7).then(|| shallow.clone()),
            values: r.values,
        })
        .collect();
    // Query gradients on `checkpoints + 1` states of the real model.
    let dev = Device::Cpu;
    let base = spec.base.to_tensors(&dev)?;
    let proj = crate::pergrad::Projection::new(&layout, s.sketch_seed, s.sketch_side)?;
    let a = Adapters::init(layout.clone(), adapter_init_seed(s.sketch_seed));
    let steps = (n / 16) as u64;
    let states: Vec<(u64, &Adapters)> = (0..=checkpoints as u64)
        .map(|k| (k * steps / checkpoints.max(1) as u64, &a))
        .collect();
    let t1 = Instant::now();
    let q = crate::trace::query_gradients(
        &s.model,
        &base,
        &states,
        &proj,
        b"What light through yonder window ",
        b"breaks? It is the east",
    )?;
    let query_grad_s = t1.elapsed().as_secs_f64();
    let lr = LrSchedule::Constant(s.optim.lr);
    let t2 = Instant::now();
    score(&coords, &q, &examples, &lr, Method::tracin_cosine(), None)?;
    let tracin_s = t2.elapsed().as_secs_f64();
    let tc = Instant::now();
    let common = Preconditioner::fit_common(&coords, &examples, crate::score::DEFAULT_COMMON_DIRECTIONS)?;
    let common_fit_s = tc.elapsed().as_secs_f64();
    let td = Instant::now();
    score(&coords, &q, &examples, &lr, Method::tracin(), Some(&common))?;
    let tracin_default_s = td.elapsed().as_secs_f64();
    let t3 = Instant::now();
    let adam = Preconditioner::fit_adam(&coords, &examples)?;
    let adam_fit_s = t3.elapsed().as_secs_f64();
    let t4 = Instant::now();
    score(&coords, &q, &examples, &lr, Method::tracin_adam(), Some(&adam))?;
    let tracin_adam_s = t4.elapsed().as_secs_f64();
    let t5 = Instant::now();
    let pre = Preconditioner::fit(&coords, &examples, crate::score::DEFAULT_TRAK_LAMBDA, true)?;
    let trak_fit_s = t5.elapsed().as_secs_f64();
    let t6 = Instant::now();
    score(&coords, &q, &examples, &lr, Method::trak(), Some(&pre))?;
    let trak_s = t6.elapsed().as_secs_f64();
    Ok(TraceLatency {
        examples: n,
        dim,
        states: states.len(),
        decode_s,
        query_grad_s,
        tracin_s,
        common_fit_s,
        tracin_default_s,
        adam_fit_s,
        tracin_adam_s,
        trak_fit_s,
        trak_s,
    })
}

impl TraceLatency {
    /// The figures as a Markdown table.
    pub fn table(&self) -> String {
        format!(
            "Trace latency: one query against {} logged sketches (dim {}), query gradients on {} model states.\n\n\
             | step | seconds |\n|---|---|\n\
             | decode the sketch blob | {:.3} |\n\
             | query gradients ({} states) | {:.3} |\n\
             | TracIn (plain cosine), per query | {:.3} |\n\
             | common-direction fit (once per campaign) | {:.3} |\n\
             | TracIn default (routed, common directions out), per query | {:.3} |\n\
             | Adam diagonal fit (once per campaign) | {:.3} |\n\
             | TracIn (Adam-normalised), per query | {:.3} |\n\
             | TRAK preconditioner fit (once per campaign) | {:.3} |\n\
             | TRAK-style, per query | {:.3} |\n",
            self.examples,
            self.dim,
            self.states,
            self.decode_s,
            self.states,
            self.query_grad_s,
            self.tracin_s,
            self.common_fit_s,
            self.tracin_default_s,
            self.adam_fit_s,
            self.tracin_adam_s,
            self.trak_fit_s,
            self.trak_s
        )
    }
}

/// One audit rate's cost: an honest campaign with its co-signers played in
/// process ([`crate::auditor::AuditingSink`]).
#[derive(Debug, Clone)]
pub struct AuditRow {
    /// The rate, in millionths.
    pub rate_millionths: u32,
    /// Records committed.
    pub records: usize,
    /// Steps committed.
    pub steps: u64,
    /// The operator's seconds (the campaign's, less the auditors').
    pub operator_s: f64,
    /// Every co-signer's auditing seconds (tickets and replays), summed.
    pub cosigners_s: f64,
    /// Governance's part of it.
    pub governance_s: f64,
    /// The campaign's wall time with each co-signer on its own machine:
    /// the operator's time plus, per record, the slowest auditor's (the
    /// tuner waits for each record's commit).
    pub wall_s: f64,
}

/// Honest campaigns of `cfg` over `steps` steps at audit rates 0, 10 % and
/// 100 %.
pub fn audit_cost(cfg: &crate::demo::DemoConfig, steps: u64) -> Result<Vec<AuditRow>> {
    use std::collections::BTreeMap;
    let mut rows = Vec::new();
    for rate in [0u32, 100_000, provenance::audit::ALWAYS] {
        let mut c = cfg.clone();
        c.settings.max_steps = steps;
        c.policy.audit.rate_millionths = rate;
        c.policy.audit.example_tolerance = c.policy.audit.example_tolerance.max(0.004);
        let w = crate::demo::build(&c, &mut MemorySink::default(), &mut |_, _| {})?;
        let mut sink = crate::auditor::AuditingSink::new(&w.spec, w.consortium)?;
        let t = Instant::now();
        let out = run(
            w.spec,
            Box::new(SimClock {
                next: c.start_ms + 100_000,
                step_ms: 10,
            }),
            &mut sink,
            &mut (),
        )?;
        let total = t.elapsed().as_secs_f64();
        let cosigners: f64 = sink.spent.iter().map(|(_, _, d)| d.as_secs_f64()).sum();
        let governance: f64 = sink
            .spent
            .iter()
            .filter(|(_, a, _)| {
                sink.consortium
                    .keyring
                    .authority(a)
                    .is_ok_and(|k| k.role == provenance::Role::Governance)
            })
            .map(|(_, _, d)| d.as_secs_f64())
            .sum();
        let mut slowest: BTreeMap<u64, f64> = BTreeMap::new();
        for (seq, _, d) in &sink.spent {
            let e = slowest.entry(*seq).or_default();
            *e = e.max(d.as_secs_f64());
        }
        let operator = total - cosigners;
        rows.push(AuditRow {
            rate_millionths: rate,
            records: sink.audits.len(),
            steps: out.steps,
            operator_s: operator,
            cosigners_s: cosigners,
            governance_s: governance,
            wall_s: operator + slowest.values().sum::<f64>(),
        });
    }
    Ok(rows)
}

/// The audit cost table: per step; wall time as a ratio to rate 0, the
/// co-signers' CPU as a ratio to the operator's.
pub fn audit_table(rows: &[AuditRow]) -> String {
    let base_wall = rows.first().map(|b| b.wall_s).unwrap_or(1.0);
    let mut o = String::from(
        "| audit rate | records (steps) | operator s/step | co-signers' CPU s/step (governance) | co-signers' CPU / operator's | campaign wall s | wall vs rate 0 |\n|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let per = |x: f64| x / r.steps.max(1) as f64;
        o.push_str(&format!(
            "| {:.1} % | {} ({}) | {:.3} | {:.3} ({:.3}) | {:.2} | {:.1} | {:.2}x |\n",
            f64::from(r.rate_millionths) / 10_000.0,
            r.records,
            r.steps,
            per(r.operator_s),
            per(r.cosigners_s),
            per(r.governance_s),
            r.cosigners_s / r.operator_s.max(1e-9),
            r.wall_s,
            r.wall_s / base_wall,
        ));
    }
    o
}
