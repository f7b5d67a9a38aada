//! `govtune-tuner`: run a governed fine-tuning campaign without a node
//! (entries to a file), rebuild a model from its delta blobs, benchmark.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use provenance::EntryBody;
use tuner::campaign::{run, Progress, ProgressInfo, SimClock, Stop, SystemClock};
use tuner::demo::{build, DemoConfig};
use tuner::sink::{read_blob, read_events, FileSink, MemorySink};

#[derive(Parser)]
#[command(name = "govtune-tuner", about = "Governed fine-tuning on candle")]
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
    },
}

struct Bar(ProgressBar);

impl Progress for Bar {
    fn update(&mut self, i: &ProgressInfo) {
        self.0.set_position(i.attempts);
        self.0.set_message(format!(
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
                },
        } => {
            let cfg = DemoConfig::load(&config)?;
            let mut sink = FileSink::create(&events_out)?;
            let w = build(&cfg, &mut sink, &mut |s, l| {
                if s % 20 == 0 {
                    eprintln!("base model: step {s} loss {l:.3}");
                }
            })?;
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
            let out = run(w.spec, clock, &mut sink, &mut Bar(bar.clone()))?;
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
