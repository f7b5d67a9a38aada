//! `govtune demo`: the main job end to end, on loopback.
//!
//! 1. A 4-node testnet (two data-source authorities, governance, operator),
//!    one process each.
//! 2. Governance publishes the policy; each rights-holder registers its
//!    plays at its own node (terms from `data/demo.toml`, chosen so that
//!    every admission rule fires); one source is revoked before the
//!    campaign; one manifest is offered to the tuner with a signature that
//!    does not verify (it never reaches the ledger).
//! 3. The base model is pretrained in its own campaign on the ledger; the
//!    fine-tuning campaign names it as its base.
//! 4. The fine-tune runs through the operator's node with a live progress
//!    bar; halfway through, one data-source node is SIGKILLed and
//!    restarted, and its catch-up is measured.
//! 5. Three outputs are traced at a data-source node (a planted canary that
//!    stayed below the memorisation threshold, a window of the last training
//!    event from a full-depth source, and the
//!    fine-tuned model's own continuation of a held-out prompt) and each
//!    answer is verified as a light client.
//! 6. Every verifier predicate runs; one source is revoked and audited.
//! 7. A self-contained HTML report is written (`report.rs`).
//!
//! Everything the demo prints about the ledger comes from the light client
//! ([`lightclient::verify::Verifier`]); `demo.json` in the folder lists what it
//! did for scripts (CI re-checks it through the API and `govtune verify`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lightclient::verify::Verifier;
use provenance::{Canonical, Timestamp};
use tuner::campaign::Stop;
use tuner::demo::DemoConfig;

use roles::campaign::{fine_tune_spec, HttpSink, WallClock};
use roles::now_ms;
use roles::progress::BarProgress;

use crate::campaign::node_of;
use crate::report::{self, ReportData};
use crate::TestnetError;

mod commands;
mod data;
mod plan;
mod stages;
mod steps;

use plan::quantile;
pub use plan::*;
use steps::{indent, kill_and_restart, revoke, wait_certified, DemoProgress};

fn stage(n: u32, what: &str) {
    println!("\n== {n}. {what}");
}

/// Runs the demo.
pub fn run(opts: &DemoOptions) -> Result<DemoSummary, TestnetError> {
    let started = Instant::now();
    // Every path the demo writes down (demo.json, the commands it prints)
    // is absolute, so that it holds from any directory.
    std::fs::create_dir_all(&opts.dir)
        .map_err(|e| TestnetError::Io(format!("{}: {e}", opts.dir.display())))?;
    let dir = std::fs::canonicalize(&opts.dir)
        .map_err(|e| TestnetError::Io(format!("{}: {e}", opts.dir.display())))?;
    let config = match &opts.config {
        Some(c) => c.clone(),
        None => data::extract(&dir.join("data"))?,
    };
    let plan = DemoPlan::load(&config)?;
    let mut cfg = DemoConfig::load(&config)?;
    if opts.short {
        stages::short_profile(&plan, &mut cfg)?;
    }
    let title_pos = |title: &str| -> Result<usize, TestnetError> {
        cfg.sources
            .iter()
            .position(|s| s.terms.title == title)
            .ok_or_else(|| {
                TestnetError::Run(format!("[demo] names {title:?}, which is not among the sources"))
            })
    };
    let forged_pos = title_pos(&plan.forged)?;
    let revoke_before_pos = title_pos(&plan.revoke_before)?;
    let revoke_after_pos = title_pos(&plan.revoke_after)?;
    let traced_pos = title_pos(&plan.traced_canary)?;

    stage(1, "a consortium of 4 nodes on loopback");
    let net = dir.join("net");
    // A fresh run replaces the testnet an earlier one left behind.
    if crate::Testnet::remove(&net)? {
        println!(
            "  (replaced the testnet an earlier run left in {})",
            net.display()
        );
    }
    let t = stages::start_testnet(&net, &opts.binary)?;
    let genesis = t.genesis_path();
    let (_, keyring) = genesis::load_genesis(&genesis)?;
    let op = node_of(&t, &cfg.operator)?;
    let reader = t.client(op);

    stage(
        2,
        "governance publishes the policy; rights-holders register their plays",
    );
    let stages::Registered {
        policy_id,
        base_sources,
        sources,
        revocations,
        early_height,
        now,
    } = stages::register(
        &t,
        &reader,
        &mut cfg,
        &stages::Picks {
            forged: forged_pos,
            revoke_before: revoke_before_pos,
        },
    )?;

    stage(
        3,
        "the base model's own campaign (full-parameter pretraining on 4 plays)",
    );
    let mut sink = HttpSink::new(t.admin(op)?);
    let operator = provenance::AuthorityId::new(cfg.operator.clone()).map_err(provenance::Error::from)?;
    let purpose = provenance::Purpose::new(cfg.purpose.clone()).map_err(provenance::Error::from)?;
    let template = tuner::demo::base_template(
        &cfg,
        operator,
        format!("{}-base-{now}", cfg.name),
        purpose,
        Timestamp(now_ms()),
    );
    let pretrain_started = Instant::now();
    let base = tuner::pretrain::pretrain(
        &cfg.pretrain,
        &keyring,
        &cfg.policy,
        template,
        base_sources,
        &mut WallClock,
        &mut sink,
        &mut |step, loss| {
            if step % 10 == 0 {
                println!("  base model: step {step} loss {loss:.3}");
            }
        },
    )
    .map_err(|e| TestnetError::Run(format!("base campaign: {e}")))?;
    println!(
        "  base campaign {} closed: {} steps in {:.0} s, weights {}",
        base.campaign.short(),
        cfg.pretrain.steps,
        pretrain_started.elapsed().as_secs_f64(),
        base.state.short()
    );
    let pretrain_s = pretrain_started.elapsed().as_secs_f64();
    let base_path = dir.join("base.safetensors");
    base.weights.save(&base_path)?;
    let base_bytes =
        std::fs::read(&base_path).map_err(|e| TestnetError::Io(format!("{}: {e}", base_path.display())))?;

    stage(4, "the governed fine-tune, co-signed by all four authorities");
    let spec = fine_tune_spec(
        &cfg,
        &mut sink,
        keyring,
        &base_bytes,
        base.weights.clone(),
        Some(base.campaign),
        sources.clone(),
        revocations,
        now_ms(),
    )?;
    let campaign_id = spec.campaign.digest();
    println!(
        "  campaign {} opens on base {} (policy {}, {} steps)",
        campaign_id.short(),
        base.campaign.short(),
        policy_id.short(),
        cfg.settings.max_steps
    );
    let stats = sink.stats();
    let kill_node = node_of(&t, &plan.kill)?;
    let kill_name = t.nodes[kill_node].name.clone();
    let t = Arc::new(Mutex::new(t));
    let catch_up = Arc::new(Mutex::new(CatchUp::default()));
    let chaos = kill_and_restart(
        t.clone(),
        catch_up.clone(),
        reader.clone(),
        kill_node,
        kill_name.clone(),
    );
    let mut progress = DemoProgress {
        bar: BarProgress::new(cfg.settings.max_steps).with_stats(stats.clone()),
        samples: Vec::new(),
        kill_at: (cfg.settings.max_steps / 2).max(1),
        chaos: Some(Box::new(chaos)),
    };
    let fine_tune_started = Instant::now();
    let out =
        tuner::campaign::run(spec, Box::new(WallClock), &mut sink, &mut progress).map_err(TestnetError::from);
    let fine_tune_s = fine_tune_started.elapsed().as_secs_f64();
    progress.bar.finish();
    let out = out?;
    if let Stop::CoSignerRefused { kind, reason } = &out.stop {
        return Err(TestnetError::Run(format!(
            "a co-signer refused a {kind}: {reason}"
        )));
    }
    println!(
        "  closed: {} steps committed of {} attempted, {} rolled back for memorisation; examples admitted {}, refused {}; {} entries",
        out.steps, out.attempts, out.rolled_back, out.admitted, out.refused, out.entries
    );
    // The node must be back before the rest reads from every node.
    let deadline = Instant::now() + Duration::from_secs(120);
    while catch_up.lock().map(|c| c.node.is_empty()).unwrap_or(true) {
        if Instant::now() > deadline {
            return Err(TestnetError::Run(format!("{kill_name} did not come back")));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let catch_up = catch_up.lock().map(|c| c.clone())?;
    let mut t = match Arc::try_unwrap(t) {
        Ok(m) => m.into_inner()?,
        Err(_) => {
            return Err(TestnetError::Run(
                "the restart thread still holds the testnet".into(),
            ))
        }
    };
    let snapshot = out
        .snapshots
        .last()
        .ok_or_else(|| TestnetError::Run("the campaign kept no model snapshot".into()))?;
    let model_bytes = reader.get_bytes(&format!("/v1/blobs/{}", snapshot.blob.to_hex()))?;
    let model_path = dir.join("model.safetensors");
    std::fs::write(&model_path, &model_bytes)
        .map_err(|e| TestnetError::Io(format!("{}: {e}", model_path.display())))?;
    let size = reader.health()?.log_size;
    t.wait_converged(size, Duration::from_secs(120))?;
    wait_certified(&reader, size)?;
    let roots: Vec<(String, u64, String)> = t
        .nodes
        .iter()
        .zip(t.status())
        .map(|(n, s)| {
            let (_, size, root) = s.unwrap_or_default();
            (n.name.clone(), size, root)
        })
        .collect();
    for (name, size, root) in &roots {
        println!("  {name:<7} log size {size:>5} root {root}");
    }

    stage(
        5,
        "three outputs traced at a data-source node, each verified as a light client",
    );
    let ds = t.by_role("data-source")?;
    let tracer = t.client(ds);
    let stages::Traced { vc, traces, answers } = stages::trace_outputs(&stages::TraceInputs {
        node: &tracer,
        dir: &dir,
        cfg: &cfg,
        plan: &plan,
        traced_pos,
        genesis: &genesis,
        campaign: &campaign_id,
        sources: &sources,
        base: &base.weights,
        model: &model_bytes,
    })?;

    stage(
        6,
        "every verifier predicate, as a light client holding only the genesis file",
    );
    let predicates = stages::predicates(&stages::PredicateInputs {
        genesis: &genesis,
        node: &tracer,
        early_height,
        fine_tune: &campaign_id,
        base: &base.campaign,
        policy: &policy_id,
        model: &model_bytes,
        sources: &sources,
        forged: &plan.forged,
        traces: &traces,
    })?;

    stage(7, "a rights-holder revokes a source; the revocation audit");
    let revoked = sources[revoke_after_pos].manifest.source_id();
    revoke(
        &t,
        &reader,
        &sources[revoke_after_pos],
        "licence ended after the campaign",
    )?;
    let size = reader.health()?.log_size;
    wait_certified(&reader, size)?;
    let mut v = Verifier::new(&genesis, tracer.clone())?;
    let audit = v.revocation_audit(&revoked)?;
    print!("{}", indent(&audit.render()));
    std::fs::write(
        dir.join("revocation-audit.json"),
        serde_json::to_string_pretty(&audit)?,
    )?;

    stage(8, "the report");
    let counts = stages::refusal_counts(&vc.chain, &sources);
    let demo_sources = stages::demo_sources(&sources, &counts, out.close.as_ref(), &plan.forged);
    let report_path = dir.join("report.html");
    let data = ReportData {
        campaign: campaign_id,
        base_campaign: base.campaign,
        policy: policy_id,
        policy_authority: cfg.policy.authority.to_string(),
        operator: cfg.operator.clone(),
        nodes: roots.clone(),
        sources: demo_sources.clone(),
        refusals: counts
            .iter()
            .map(|((t, r), n)| (t.clone(), r.to_string(), *n))
            .collect(),
        samples: progress.samples.clone(),
        latencies: stats.lock().map(|s| s.latencies.clone()).unwrap_or_default(),
        traces: traces
            .iter()
            .zip(&answers)
            .map(|(t, a)| (t.label.clone(), a.clone()))
            .collect(),
        predicates: predicates.clone(),
        catch_up: catch_up.clone(),
        audit: audit.render(),
        steps: (out.steps, out.attempts, out.rolled_back),
    };
    std::fs::write(&report_path, report::render(&data))
        .map_err(|e| TestnetError::Io(format!("{}: {e}", report_path.display())))?;
    let mut summary = DemoSummary {
        genesis,
        testnet: net,
        policy: policy_id,
        base_campaign: base.campaign,
        campaign: campaign_id,
        model: model_path,
        sources: demo_sources,
        steps: (out.steps, out.attempts, out.rolled_back),
        catch_up,
        traces,
        predicates,
        revoked,
        audit_steps: audit.steps.len(),
        report: report_path.clone(),
        roots,
        seconds: started.elapsed().as_secs_f64(),
        commands: Vec::new(),
        figures: {
            let lat: Vec<f64> = stats
                .lock()
                .map(|s| s.latencies.iter().map(|x| x.1).collect())
                .unwrap_or_default();
            Figures {
                pretrain_s_per_step: pretrain_s / cfg.pretrain.steps.max(1) as f64,
                fine_tune_attempts_per_s: out.attempts as f64 / fine_tune_s.max(1e-9),
                finality_p50_s: quantile(&lat, 0.5),
                finality_p99_s: quantile(&lat, 0.99),
                trace_s: answers.iter().map(|a| a.seconds).collect(),
            }
        },
    };
    if opts.keep_running {
        let api = t.nodes[ds].api.clone();
        summary.commands = commands::follow_up_commands(&commands::FollowUp {
            binary: &opts.binary,
            dir: &dir,
            net: &summary.testnet,
            genesis: &summary.genesis,
            node: &api,
            first: early_height,
            campaign: &campaign_id,
            policy: &policy_id,
            model: &summary.model,
            source: &sources[traced_pos].manifest.source_id(),
            revoked: &revoked,
            trace: summary
                .traces
                .first()
                .ok_or_else(|| TestnetError::Run("the demo traced nothing".into()))?,
        });
    }
    std::fs::write(dir.join("demo.json"), serde_json::to_string_pretty(&summary)?)?;
    println!("  {}", report_path.display());
    if opts.keep_running {
        t.detach();
        println!(
            "\nthe testnet keeps running; check the outcome yourself (each exits 0; the last stops it):"
        );
        for c in &summary.commands {
            println!("  {c}");
        }
    } else {
        t.down()?;
    }
    let f = &summary.figures;
    println!(
        "figures: base campaign {:.2} s/step; fine-tune {:.2} attempted steps/s; finality p50 {:.2} s, p99 {:.2} s; traces {:?} s; {} caught up in {:.2} s",
        f.pretrain_s_per_step,
        f.fine_tune_attempts_per_s,
        f.finality_p50_s,
        f.finality_p99_s,
        f.trace_s.iter().map(|x| (x * 10.0).round() / 10.0).collect::<Vec<_>>(),
        summary.catch_up.node,
        summary.catch_up.caught_up_s
    );
    println!("done in {:.0} s", summary.seconds);
    Ok(summary)
}
