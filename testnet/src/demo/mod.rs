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

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lightclient::verify::{Verdict, Verifier};
use provenance::{Canonical, Digest, EffectiveRevocation, EntryBody, RefusalReason, Timestamp};
use tuner::campaign::Stop;
use tuner::data::SignedSource;
use tuner::demo::DemoConfig;

use roles::campaign::{
    fine_tune_spec, prepare_sources, shift_windows, signature_of, signed_source, HttpSink, WallClock,
};
use roles::now_ms;
use roles::progress::BarProgress;

use crate::campaign::{node_of, publish_policy, register_sources};
use crate::report::{self, ReportData};
use crate::{NodeSettings, Testnet, TestnetError};

mod plan;
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
    let plan = DemoPlan::load(&opts.config)?;
    let mut cfg = DemoConfig::load(&opts.config)?;
    if opts.short {
        cfg.settings.max_steps = plan.short.max_steps;
        cfg.pretrain.steps = plan.short.pretrain_steps;
        if !plan.short.canaries_every.is_empty() {
            if plan.short.canaries_every.len() != cfg.canaries.len() {
                return Err(TestnetError::Run(format!(
                    "[demo.short] canaries_every has {} entries for {} canaries",
                    plan.short.canaries_every.len(),
                    cfg.canaries.len()
                )));
            }
            for (c, &every) in cfg.canaries.iter_mut().zip(&plan.short.canaries_every) {
                c.every = every;
            }
        }
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
    std::fs::create_dir_all(&opts.dir)
        .map_err(|e| TestnetError::Io(format!("{}: {e}", opts.dir.display())))?;

    stage(1, "a consortium of 4 nodes on loopback");
    let net = opts.dir.join("net");
    let settings = NodeSettings {
        view_timeout_ms: Some(1500),
        heartbeat_ms: Some(300),
        max_block_entries: None,
    };
    let mut t = Testnet::create(&net, 4, &opts.binary, &settings)?;
    t.start_all()?;
    t.wait_all_healthy(Duration::from_secs(120))?;
    for n in &t.nodes {
        println!(
            "  {:<7} {:<16} {:<12} http://{}",
            n.name, n.authority, n.role, n.api
        );
    }
    let genesis = t.genesis_path();
    let (_, keyring) = genesis::load_genesis(&genesis)?;
    let op = node_of(&t, &cfg.operator)?;
    let reader = t.client(op);
    let wait = Duration::from_secs(120);

    stage(
        2,
        "governance publishes the policy; rights-holders register their plays",
    );
    let now = now_ms();
    shift_windows(&mut cfg, now);
    let policy_id = publish_policy(&t, &cfg.policy)?;
    let window = cfg.settings.model.window();
    let base_prepared = prepare_sources(&cfg.base_sources, &[], window, cfg.consortium_seed ^ 1)?;
    let prepared = prepare_sources(&cfg.sources, &cfg.canaries, window, cfg.consortium_seed)?;
    let registered: Vec<_> = prepared
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != forged_pos)
        .map(|(_, p)| p.clone())
        .collect();
    let mut ids = register_sources(&t, &base_prepared)?;
    ids.extend(register_sources(&t, &registered)?);
    ids.push(policy_id);
    reader.wait_committed(&ids, wait)?;
    let size = reader.health()?.log_size;
    let early_height = wait_certified(&reader, size)?;
    println!(
        "  policy {} (licenses {:?}, purposes {:?}) committed",
        policy_id.short(),
        cfg.policy.admissible_licenses,
        cfg.policy.admissible_purposes
    );
    let base_sources = base_prepared
        .into_iter()
        .map(|p| signed_source(&reader, p))
        .collect::<Result<Vec<_>, _>>()?;
    let mut sources: Vec<SignedSource> = Vec::new();
    for (i, p) in prepared.iter().enumerate() {
        let s = if i == forged_pos {
            // Another manifest's (valid) signature: it does not verify over
            // this one, so no node would register it and the tuner refuses it.
            let other = prepared
                .iter()
                .enumerate()
                .find(|(j, q)| *j != i && q.manifest.authority == p.manifest.authority)
                .map(|(_, q)| q.manifest.source_id())
                .ok_or_else(|| {
                    TestnetError::Run("no other manifest of the forged source's authority".into())
                })?;
            let signature = signature_of(&reader, &other)?
                .ok_or_else(|| TestnetError::Run("the borrowed signature is not on the ledger".into()))?;
            SignedSource {
                manifest: p.manifest.clone(),
                signature,
                text: p.text.clone(),
                salt: p.salt,
            }
        } else {
            signed_source(&reader, p.clone())?
        };
        let m = &s.manifest;
        println!(
            "  {:<28} {:<14} {:<30} {:<13} {:<24} {}",
            m.title,
            m.authority.as_str(),
            m.license.as_str(),
            format!("{:?}", m.rights_basis),
            m.purposes
                .iter()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join(","),
            if i == forged_pos {
                "(not registered: forged signature)"
            } else {
                m.data_class.as_str()
            }
        );
        sources.push(s);
    }
    // One rights-holder withdraws a source before the campaign opens.
    let revoked_before = sources[revoke_before_pos].manifest.source_id();
    let effective = revoke(
        &t,
        &reader,
        &sources[revoke_before_pos],
        "consent withdrawn before the campaign",
    )?;
    println!(
        "  {} revoked by {} (effective {})",
        sources[revoke_before_pos].manifest.title, sources[revoke_before_pos].manifest.authority, effective.0
    );
    let revocations = vec![EffectiveRevocation {
        source: revoked_before,
        effective,
    }];

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
    let base_path = opts.dir.join("base.safetensors");
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
    let model_path = opts.dir.join("model.safetensors");
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
    let traces_dir = opts.dir.join("traces");
    std::fs::create_dir_all(&traces_dir)?;
    let mut queries: Vec<(String, String, String)> = Vec::new();
    let below = cfg
        .canaries
        .iter()
        .find(|c| c.source == traced_pos)
        .ok_or_else(|| {
            TestnetError::Run(format!(
                "[demo] traced_canary: no canary is planted in {:?}",
                plan.traced_canary
            ))
        })?;
    // As the tracing evaluation asks it: prompt = the canary's prefix,
    // output = its secret.
    queries.push((
        format!(
            "canary below the threshold (in {})",
            cfg.sources[below.source].terms.title
        ),
        below.canary.prefix.clone(),
        below.canary.secret.clone(),
    ));
    let vc = Verifier::new(&genesis, tracer.clone())?.campaign(&campaign_id)?;
    // A window of the campaign's last training event (the latest trained,
    // scored against the query states nearest to the final model: the first
    // steps are scored against the step-0 adapters, whose LoRA `B = 0`
    // makes the query gradient degenerate), from a source admitted at full
    // depth that carries no canary. A depth-limited source's window trains
    // the last layers only; one traced by its own text did not rank its
    // source in the top 3 (docs/tracing.md, "Seen in the demo"); a canary
    // window would repeat query 1.
    let canary_sources: BTreeSet<Digest> = cfg
        .canaries
        .iter()
        .map(|c| sources[c.source].manifest.source_id())
        .collect();
    let full_depth = cfg.settings.model.layers as u16;
    let pick = |r: &&provenance::event::ExampleRecord| {
        !canary_sources.contains(&r.source) && r.decision.depth.max_depth >= full_depth
    };
    let trained = vc
        .chain
        .iter()
        .rev()
        .find_map(|b| b.event()?.records.iter().find(pick).map(|r| (r.source, r.index)))
        .ok_or_else(|| TestnetError::Run("the campaign committed no example".into()))?;
    let ts = sources
        .iter()
        .find(|s| s.manifest.source_id() == trained.0)
        .ok_or_else(|| TestnetError::Run("a trained example of an unknown source".into()))?;
    let w = ts.text[trained.1 as usize * window..(trained.1 as usize + 1) * window].to_vec();
    queries.push((
        format!(
            "a trained window (example {} of {})",
            trained.1, ts.manifest.title
        ),
        String::from_utf8_lossy(&w[..window / 2]).into_owned(),
        String::from_utf8_lossy(&w[window / 2..]).into_owned(),
    ));
    let generated = tuner::demo::continue_text(
        &cfg.settings,
        &base.weights,
        &model_bytes,
        plan.held_out_prompt.as_bytes(),
        32,
    )?;
    queries.push((
        "the fine-tuned model's continuation of a held-out prompt".into(),
        plan.held_out_prompt.clone(),
        String::from_utf8_lossy(&generated).into_owned(),
    ));
    let mut traces = Vec::new();
    let mut answers = Vec::new();
    for (k, (label, prompt, output)) in queries.into_iter().enumerate() {
        let a = lightclient::cli::ask_trace(&tracer, &campaign_id, &prompt, &output, None)?;
        let file = traces_dir.join(format!("trace-{}.json", k + 1));
        std::fs::write(&file, serde_json::to_string_pretty(&a)?)?;
        let mut v = Verifier::new(&genesis, tracer.clone())?;
        let verdict = v.trace(&a, k == 0)?;
        let top = a.sources.first().map(|s| s.title.clone()).unwrap_or_default();
        println!("\n  [{}] {label}: {:?} → {:?}", k + 1, prompt, output);
        for s in a.sources.iter().take(3) {
            println!(
                "      {}. {:<28} signed by {:<14} salient {:.2e}",
                s.rank, s.title, s.authority, s.salient
            );
        }
        println!(
            "      {} events cited, {} examples scored in {:.1} s; light client: {}{}",
            a.events.len(),
            a.examples_scored,
            a.seconds,
            if verdict.pass { "PASS" } else { "FAIL" },
            if k == 0 {
                " (scores recomputed bit for bit)"
            } else {
                ""
            }
        );
        traces.push(DemoTrace {
            label,
            prompt,
            output,
            answer: file,
            top_source: top,
            verified: verdict.pass,
        });
        answers.push(a);
    }

    stage(
        6,
        "every verifier predicate, as a light client holding only the genesis file",
    );
    let mut verdicts: Vec<(String, Verdict)> = Vec::new();
    let fresh = || Verifier::new(&genesis, tracer.clone()).map_err(TestnetError::from);
    let v = fresh()?;
    let cp = v.light().latest_checkpoint(v.node())?;
    let first = v.light().checkpoint_at(v.node(), early_height)?;
    let extends = v.light().verify_extends(v.node(), &first, &cp).is_ok();
    let mut predicates = vec![
        (
            format!(
                "checkpoint at height {} signed by the consortium",
                cp.checkpoint.height
            ),
            true,
        ),
        (
            format!(
                "consistency: the log of size {} extends the one of size {}",
                cp.checkpoint.size, first.checkpoint.size
            ),
            extends,
        ),
    ];
    verdicts.push((
        "regulator: the fine-tune ran under the approved policy".into(),
        fresh()?.policy(&campaign_id, &policy_id)?,
    ));
    verdicts.push((
        "regulator: the base campaign ran under it too".into(),
        fresh()?.policy(&base.campaign, &policy_id)?,
    ));
    verdicts.push((
        "operator: model.safetensors is the base plus the recorded deltas".into(),
        fresh()?.model(&campaign_id, &model_bytes)?,
    ));
    for s in &sources {
        let id = s.manifest.source_id();
        if s.manifest.title == plan.forged {
            continue;
        }
        verdicts.push((
            format!("rights-holder: {} used only within its terms", s.manifest.title),
            fresh()?.source(&id, false)?,
        ));
    }
    for (what, verdict) in &verdicts {
        let detail = verdict.render();
        let detail = detail.lines().next().unwrap_or("");
        let detail = detail.split_once(": ").map(|x| x.1).unwrap_or(detail);
        predicates.push((format!("{what} ({detail})"), verdict.pass));
    }
    for tr in &traces {
        predicates.push((format!("trace: {}", tr.label), tr.verified));
    }
    for (what, pass) in &predicates {
        println!("  {} {what}", if *pass { "PASS" } else { "FAIL" });
    }

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
        opts.dir.join("revocation-audit.json"),
        serde_json::to_string_pretty(&audit)?,
    )?;

    stage(8, "the report");
    let mut counts: BTreeMap<(String, RefusalReason), u64> = BTreeMap::new();
    let title_of = |d: &Digest| -> String {
        sources
            .iter()
            .find(|s| &s.manifest.source_id() == d)
            .map(|s| s.manifest.title.clone())
            .unwrap_or_else(|| d.short())
    };
    for b in &vc.chain {
        match b {
            EntryBody::Refusal(r) => {
                for e in &r.examples {
                    *counts.entry((title_of(&e.source), r.reason)).or_default() += 1;
                }
            }
            EntryBody::RefusalAggregate(a) => {
                for c in &a.counts {
                    *counts.entry((title_of(&c.source), c.reason)).or_default() += c.count;
                }
            }
            _ => {}
        }
    }
    let demo_sources: Vec<DemoSource> = sources
        .iter()
        .map(|s| {
            let id = s.manifest.source_id();
            let reasons: Vec<String> = counts
                .iter()
                .filter(|((title, r), _)| title == &s.manifest.title && *r != RefusalReason::Memorisation)
                .map(|((_, r), _)| r.to_string())
                .collect();
            let (admitted, refused) = out
                .close
                .iter()
                .flat_map(|c| c.per_source.iter())
                .find(|p| p.source == id)
                .map(|p| (p.admitted, p.refused))
                .unwrap_or((0, 0));
            DemoSource {
                title: s.manifest.title.clone(),
                id,
                authority: s.manifest.authority.to_string(),
                registered: s.manifest.title != plan.forged,
                admission: if reasons.is_empty() {
                    "admitted".into()
                } else {
                    reasons.join(", ")
                },
                admitted,
                refused,
            }
        })
        .collect();
    let report_path = opts.dir.join("report.html");
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
    let summary = DemoSummary {
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
    std::fs::write(
        opts.dir.join("demo.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    println!("  {}", report_path.display());
    if opts.keep_running {
        t.detach();
        println!(
            "\nthe testnet keeps running: `govtune testnet status|down --dir {}`",
            summary.testnet.display()
        );
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
