//! `govtune-tuner`: run a governed fine-tuning campaign without a node
//! (entries to a file), rebuild a model from its delta blobs, benchmark.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use provenance::{Canonical, EntryBody};
use tuner::campaign::{run, Progress, ProgressInfo, SimClock, Stop, SystemClock};
use tuner::demo::{build, DemoConfig};
use tuner::sink::{read_blob, read_events, EventSink, FileSink, MemorySink};

#[derive(Parser)]
#[command(name = "govtune-tuner", version, about = "Governed fine-tuning on candle")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Campaigns.
    Campaign {
        #[command(subcommand)]
        cmd: CampaignCmd,
    },
    /// Rebuilds the final model from the base and the delta blobs and checks
    /// it against the campaign's close, bit for bit.
    Rebuild {
        /// Campaign config (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Events file written by `campaign run --events-out`.
        #[arg(long)]
        events: PathBuf,
    },
    /// Traces an output over a campaign written by `campaign run
    /// --events-out`, from the events file and its blobs alone (no node):
    /// sources by salient score, then the top examples.
    Trace {
        /// Events file written by `campaign run --events-out`.
        #[arg(long)]
        events: PathBuf,
        /// The prompt (may be empty).
        #[arg(long, default_value = "")]
        prompt: String,
        /// The output to trace.
        #[arg(long)]
        output: String,
        /// Top examples to print.
        #[arg(long, default_value_t = 10)]
        top: usize,
        /// Also print where this source's examples rank (by title).
        #[arg(long)]
        ranks_of: Option<String>,
    },
    /// Greedy continuation of a prompt by a base model plus an adapter
    /// snapshot (`govtune demo` writes both: base.safetensors,
    /// model.safetensors).
    Generate {
        /// Campaign config (TOML): the model and LoRA settings.
        #[arg(long)]
        config: PathBuf,
        /// Base weights (safetensors).
        #[arg(long)]
        base: PathBuf,
        /// Adapter snapshot (safetensors).
        #[arg(long)]
        model: PathBuf,
        /// The prompt.
        #[arg(long)]
        prompt: String,
        /// Bytes to generate.
        #[arg(long, default_value_t = 64)]
        bytes: usize,
    },
    /// Evaluations.
    Eval {
        #[command(subcommand)]
        cmd: EvalCmd,
    },
    /// Governed against ungoverned fine-tuning (`bench trace`: trace
    /// latency).
    #[command(args_conflicts_with_subcommands = true)]
    Bench {
        #[command(subcommand)]
        cmd: Option<BenchCmd>,
        /// Campaign config (TOML).
        #[arg(long, default_value = "data/campaign.toml")]
        config: PathBuf,
        /// Steps at batch granularity.
        #[arg(long, default_value_t = 20)]
        steps: u64,
        /// Steps at example granularity.
        #[arg(long, default_value_t = 40)]
        example_steps: u64,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Replay audits: an honest campaign at audit rates 0, 10 % and 100 %,
    /// its co-signers played in process.
    Audit {
        /// Campaign config (TOML).
        #[arg(long, default_value = "data/campaign.toml")]
        config: PathBuf,
        /// Steps per campaign.
        #[arg(long, default_value_t = 20)]
        steps: u64,
    },
    /// Scoring one query against many logged example sketches.
    Trace {
        /// Campaign config (TOML).
        #[arg(long, default_value = "data/campaign.toml")]
        config: PathBuf,
        /// Synthetic logged sketches.
        #[arg(long, default_value_t = 100_000)]
        examples: usize,
        /// Query checkpoints (plus the final model).
        #[arg(long, default_value_t = 4)]
        checkpoints: usize,
    },
}

#[derive(Subcommand)]
enum EvalCmd {
    /// Tracing: canary recall, source LDS against retraining, precision per
    /// event granularity.
    Trace {
        /// Campaign config (TOML): base model, policy, sources, model settings.
        #[arg(long, default_value = "data/campaign.toml")]
        config: PathBuf,
        /// The CI-sized run (a few minutes).
        #[arg(long)]
        quick: bool,
        /// Override the number of retrained half-subsets.
        #[arg(long)]
        subsets: Option<usize>,
        /// Override the sketch side.
        #[arg(long)]
        sketch_side: Option<usize>,
        /// Override the copies per canary.
        #[arg(long)]
        copies: Option<usize>,
        /// Override the number of checkpoints.
        #[arg(long)]
        checkpoints: Option<u64>,
        /// Override the epochs.
        #[arg(long)]
        epochs: Option<u64>,
        /// Override the letters per canary secret.
        #[arg(long)]
        secret_len: Option<usize>,
        /// Plant canaries at this byte offset of their windows (default random).
        #[arg(long)]
        canary_offset: Option<usize>,
        /// Override the training windows per source.
        #[arg(long)]
        train_windows: Option<usize>,
        /// Override the LoRA rank.
        #[arg(long)]
        rank: Option<usize>,
        /// Skip the example and epoch granularity runs.
        #[arg(long)]
        no_granularities: bool,
    },
}

#[derive(Subcommand)]
enum CampaignCmd {
    /// Runs a campaign.
    Run {
        /// Campaign config (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Write entries here (and blobs beside it) instead of to a node.
        #[arg(long)]
        events_out: PathBuf,
        /// Stamp steps with the wall clock instead of the simulated one.
        #[arg(long)]
        wall_clock: bool,
        /// Write one CSV line per attempted step here (attempt, committed
        /// steps, loss, canary exposure in bits, steps rolled back so far).
        #[arg(long)]
        log_steps: Option<PathBuf>,
    },
}

/// The progress bar, and the `--log-steps` CSV with the last attempt it
/// holds a line for.
struct Bar {
    bar: ProgressBar,
    log: Option<std::io::BufWriter<std::fs::File>>,
    logged: u64,
}

impl Progress for Bar {
    fn update(&mut self, i: &ProgressInfo) {
        if let Some(log) = &mut self.log {
            if i.attempts > self.logged {
                use std::io::Write;
                self.logged = i.attempts;
                // A failed write only loses the log, not the campaign.
                let _ = writeln!(
                    log,
                    "{},{},{},{},{}",
                    i.attempts, i.step, i.loss, i.exposure, i.rolled_back
                );
            }
        }
        self.bar.set_position(i.attempts);
        self.bar.set_message(format!(
            "step {} loss {:.3} admitted {} refused {} rolled back {} events {} ({:.1} events/s)",
            i.step,
            i.loss,
            i.admitted,
            i.refused,
            i.rolled_back,
            i.events,
            i.events as f64 / i.elapsed.max(1e-9)
        ));
    }
}

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> tuner::Result<ExitCode> {
    match Cli::parse().cmd {
        Cmd::Campaign {
            cmd:
                CampaignCmd::Run {
                    config,
                    events_out,
                    wall_clock,
                    log_steps,
                },
        } => {
            let cfg = DemoConfig::load(&config)?;
            let mut sink = FileSink::create(&events_out)?;
            let mut w = build(&cfg, &mut sink, &mut |s, l| {
                if s % 20 == 0 {
                    eprintln!("base model: step {s} loss {l:.3}");
                }
            })?;
            // Publish the recipe and the base weights as blobs, as a node's
            // operator does, so that `trace` can rebuild the campaign from
            // the events file alone.
            let base_path = events_out.with_extension("base.safetensors");
            w.spec.base.save(&base_path)?;
            let base_bytes = std::fs::read(&base_path).map_err(|e| tuner::TunerError::io(&base_path, e))?;
            let recipe = tuner::recipe::Recipe::new(
                cfg.settings.clone(),
                &base_bytes,
                tuner::data::considered(&w.spec.sources),
            )
            .with_audit_context(&tuner::material::AuditContext {
                probe: w.spec.probe.clone(),
                canaries: w.spec.canaries.clone(),
            });
            sink.put_blob(&recipe.base_weights, &base_bytes)?;
            sink.put_blob(&recipe.digest(), &recipe.to_bytes())?;
            w.spec.campaign.recipe = recipe.digest();
            // The policy and the fine-tune's manifests, as the ledger holds
            // them (titles for `trace`; the base campaign's are not written).
            sink.submit(&EntryBody::Policy(cfg.policy.clone()))?;
            for s in &w.spec.sources {
                sink.submit(&EntryBody::Manifest(s.manifest.clone()))?;
            }
            let bar = ProgressBar::new(cfg.settings.max_steps);
            bar.set_style(
                ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            let clock: Box<dyn tuner::campaign::Clock> = if wall_clock {
                Box::new(SystemClock)
            } else {
                Box::new(SimClock {
                    next: cfg.start_ms + 1_000_000,
                    step_ms: cfg.step_ms,
                })
            };
            let log = match &log_steps {
                Some(p) => {
                    use std::io::Write;
                    let f = std::fs::File::create(p).map_err(|e| tuner::TunerError::io(p, e))?;
                    let mut w = std::io::BufWriter::new(f);
                    writeln!(w, "attempt,step,loss,exposure,rolled_back")
                        .map_err(|e| tuner::TunerError::io(p, e))?;
                    Some(w)
                }
                None => None,
            };
            let mut progress = Bar {
                bar: bar.clone(),
                log,
                logged: 0,
            };
            let out = run(w.spec, clock, &mut sink, &mut progress)?;
            if let (Some(mut log), Some(p)) = (progress.log.take(), &log_steps) {
                use std::io::Write;
                log.flush().map_err(|e| tuner::TunerError::io(p, e))?;
            }
            bar.finish();
            sink.flush()?;
            println!("campaign {}", out.campaign);
            println!("stop: {:?}", out.stop);
            println!(
                "steps {} attempts {} admitted {} refused {} rolled back {} entries {}",
                out.steps, out.attempts, out.admitted, out.refused, out.rolled_back, out.entries
            );
            println!("final model state {}", out.final_state);
            Ok(if out.stop == Stop::Finished {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
        Cmd::Rebuild { config, events } => {
            let cfg = DemoConfig::load(&config)?;
            let base_path = cfg
                .base_weights
                .clone()
                .ok_or_else(|| tuner::TunerError::Config("the config names no base_weights file".into()))?;
            let base = tuner::model::Weights::load(cfg.settings.model, &base_path)?;
            let entries = read_events(&events)?;
            let (campaign, close) = tuner::rebuild::find_fine_tune(&entries)?;
            let layout = std::sync::Arc::new(cfg.settings.layout()?);
            let mut deltas = Vec::new();
            for e in &entries {
                if let Some(d) = tuner::rebuild::delta_of(e, &campaign) {
                    deltas.push(read_blob(&events, &d)?);
                }
            }
            let a = tuner::rebuild::rebuild(layout, &campaign, &base, &deltas)?;
            let found = a.state_digest(&base.digest());
            println!("rebuilt model state {found} from {} delta blobs", deltas.len());
            if found == close.final_state {
                println!("bit-identical to the campaign close");
                Ok(ExitCode::SUCCESS)
            } else {
                println!("MISMATCH: the close records {}", close.final_state);
                Ok(ExitCode::FAILURE)
            }
        }
        Cmd::Trace {
            events,
            prompt,
            output,
            top,
            ranks_of,
        } => {
            offline_trace(&events, &prompt, &output, top, ranks_of.as_deref())?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Generate {
            config,
            base,
            model,
            prompt,
            bytes,
        } => {
            let cfg = DemoConfig::load(&config)?;
            let base = tuner::model::Weights::load(cfg.settings.model, &base)?;
            let snapshot = std::fs::read(&model).map_err(|e| tuner::TunerError::io(&model, e))?;
            let out = tuner::demo::continue_text(&cfg.settings, &base, &snapshot, prompt.as_bytes(), bytes)?;
            println!("{}", String::from_utf8_lossy(&out));
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Eval {
            cmd:
                EvalCmd::Trace {
                    config,
                    quick,
                    subsets,
                    sketch_side,
                    copies,
                    checkpoints,
                    epochs,
                    secret_len,
                    rank,
                    canary_offset,
                    train_windows,
                    no_granularities,
                },
        } => {
            let mut s = if quick {
                tuner::eval::EvalSettings::quick()
            } else {
                tuner::eval::EvalSettings::full()
            };
            if let Some(v) = subsets {
                s.subsets = v;
            }
            if let Some(v) = sketch_side {
                s.sketch_side = v;
            }
            if let Some(v) = copies {
                s.canary_copies = v;
            }
            if let Some(v) = checkpoints {
                s.checkpoints = v;
            }
            if let Some(v) = epochs {
                s.epochs = v;
            }
            if let Some(v) = secret_len {
                s.secret_len = v;
            }
            s.rank = rank.or(s.rank);
            s.canary_offset = canary_offset.or(s.canary_offset);
            if let Some(v) = train_windows {
                s.train_windows = v;
            }
            s.granularities &= !no_granularities;
            let r = tuner::eval::run_eval(&config, &s)?;
            println!("{}", r.table());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Bench {
            cmd:
                Some(BenchCmd::Trace {
                    config,
                    examples,
                    checkpoints,
                }),
            ..
        } => {
            let cfg = DemoConfig::load(&config)?;
            let w = build(&cfg, &mut MemorySink::default(), &mut |_, _| {})?;
            let t = tuner::bench::trace_latency(&w.spec, examples, checkpoints)?;
            println!("{}", t.table());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Bench {
            cmd: Some(BenchCmd::Audit { config, steps }),
            ..
        } => {
            let cfg = DemoConfig::load(&config)?;
            let rows = tuner::bench::audit_cost(&cfg, steps)?;
            println!("{}", tuner::bench::audit_table(&rows));
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Bench {
            cmd: None,
            config,
            steps,
            example_steps,
        } => {
            let cfg = DemoConfig::load(&config)?;
            let w = build(&cfg, &mut MemorySink::default(), &mut |_, _| {})?;
            let t = tuner::bench::table(&w.spec, cfg.settings.batch_size, steps, example_steps)?;
            println!("{t}");
            let _ = EntryBody::kind;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `govtune-tuner trace`: the fine-tune among `events`, rebuilt and checked
/// from its blobs (`tuner::record`), traced with the default method.
fn offline_trace(
    events: &std::path::Path,
    prompt: &str,
    output: &str,
    top: usize,
    ranks_of: Option<&str>,
) -> tuner::Result<()> {
    use std::collections::BTreeMap;
    let entries = read_events(events)?;
    let (campaign, close) = tuner::rebuild::find_fine_tune(&entries)?;
    let d = campaign.digest();
    let chain: Vec<EntryBody> = entries
        .iter()
        .filter(|e| e.chain_link().is_some_and(|l| l.campaign == d))
        .cloned()
        .collect();
    let titles: BTreeMap<provenance::Digest, String> = entries
        .iter()
        .filter_map(|e| match e {
            EntryBody::Manifest(m) => Some((m.source_id(), m.title.clone())),
            _ => None,
        })
        .collect();
    let title = |s: &provenance::Digest| titles.get(s).cloned().unwrap_or_else(|| s.short());
    let record = tuner::record::CampaignRecord::new(campaign, chain, close)?;
    let prepared = tuner::record::PreparedTrace::build(&record, &mut |b| read_blob(events, b))?;
    let report = prepared.trace(
        prompt.as_bytes(),
        output.as_bytes(),
        tuner::score::Method::tracin(),
    )?;
    // How memorised the output is (as a canary: its bytes redrawn within
    // their class, the campaign's candidate seed), before and after.
    let ctx = prepared.context();
    let canary = tuner::memo::Canary {
        prefix: prompt.into(),
        secret: output.into(),
        candidates: 64,
    };
    let cands = tuner::memo::candidates(&canary, prepared.recipe.settings.sketch_seed);
    let mut exposures = Vec::new();
    for (step, a) in [ctx.states.first(), ctx.states.last()].into_iter().flatten() {
        let x = tuner::memo::exposure(ctx.cfg, ctx.base, a, &canary, &cands)?;
        exposures.push(format!("{x:.2} bits at step {step}"));
    }
    println!("exposure of the output: {}", exposures.join(", "));
    println!(
        "{} examples scored; salient threshold {:.4}",
        report.examples.len(),
        report.salient_threshold
    );
    println!(
        "{:<32} {:>12} {:>12} {:>9}",
        "source", "salient", "sum", "examples"
    );
    for s in report.sources_by_salient() {
        println!(
            "{:<32} {:>12.4e} {:>12.4} {:>9}",
            title(&s.source),
            s.salient,
            s.score,
            s.examples
        );
    }
    let mut best: Vec<_> = report.examples.iter().collect();
    best.sort_by(|a, b| b.score.total_cmp(&a.score));
    println!("top {top} examples: source, index, step, score");
    for e in best.iter().take(top) {
        println!(
            "{:<32} {:>6} {:>6} {:>10.4}",
            title(&e.source),
            e.index,
            e.step,
            e.score
        );
    }
    if let Some(t) = ranks_of {
        let ranks: Vec<String> = best
            .iter()
            .enumerate()
            .filter(|(_, e)| title(&e.source) == t)
            .map(|(r, e)| format!("{}:#{}@{}", r + 1, e.index, e.step))
            .collect();
        println!(
            "{t}: {} examples, rank:#index@step {}",
            ranks.len(),
            ranks.join(" ")
        );
    }
    Ok(())
}
