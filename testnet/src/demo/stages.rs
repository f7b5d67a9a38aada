//! The demo's stages that stand on their inputs alone: the short profile,
//! starting the testnet, every verifier predicate as a light client, and
//! the refusal counts and per-source rows of the report.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use lightclient::verify::{Verdict, VerifiedCampaign, Verifier};
use lightclient::Client;
use provenance::api::TraceAnswer;
use provenance::{CampaignClose, Digest, EffectiveRevocation, EntryBody, RefusalReason};
use roles::campaign::{prepare_sources, shift_windows, signature_of, signed_source};
use roles::now_ms;
use tuner::data::SignedSource;
use tuner::demo::DemoConfig;
use tuner::model::Weights;

use super::steps::{revoke, wait_certified};
use super::{DemoPlan, DemoSource, DemoTrace};
use crate::campaign::{publish_policy, register_sources};
use crate::{NodeSettings, Testnet, TestnetError};

/// Applies `[demo.short]` (the CI profile) to the campaign file.
pub(super) fn short_profile(plan: &DemoPlan, cfg: &mut DemoConfig) -> Result<(), TestnetError> {
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
    Ok(())
}

/// A 4-node testnet in `dir`, every node healthy.
pub(super) fn start_testnet(dir: &Path, binary: &Path) -> Result<Testnet, TestnetError> {
    let settings = NodeSettings {
        view_timeout_ms: Some(1500),
        heartbeat_ms: Some(300),
        max_block_entries: None,
        ..NodeSettings::default()
    };
    let mut t = Testnet::create(dir, 4, binary, &settings)?;
    t.start_all()?;
    t.wait_all_healthy(Duration::from_secs(120))?;
    for n in &t.nodes {
        println!(
            "  {:<7} {:<16} {:<12} http://{}",
            n.name, n.authority, n.role, n.api
        );
    }
    Ok(t)
}

/// What the predicates are asked about.
pub(super) struct PredicateInputs<'a> {
    /// The genesis file (all a light client holds).
    pub genesis: &'a Path,
    /// The node asked.
    pub node: &'a Client,
    /// A checkpoint height from before the campaigns.
    pub early_height: u64,
    /// The fine-tune.
    pub fine_tune: &'a Digest,
    /// The base campaign.
    pub base: &'a Digest,
    /// The approved policy.
    pub policy: &'a Digest,
    /// The fine-tuned weights file.
    pub model: &'a [u8],
    /// The sources offered to the tuner.
    pub sources: &'a [SignedSource],
    /// The source whose signature was forged (never registered).
    pub forged: &'a str,
    /// The traces, each verified.
    pub traces: &'a [DemoTrace],
}

/// Every verifier predicate, each by a fresh light client: the checkpoint
/// and its consistency with an early one, the regulator's, the operator's
/// and each rights-holder's predicate, and the traces' verdicts. Printed
/// and returned as (what, holds).
pub(super) fn predicates(i: &PredicateInputs<'_>) -> Result<Vec<(String, bool)>, TestnetError> {
    let fresh = || Verifier::new(i.genesis, i.node.clone()).map_err(TestnetError::from);
    let v = fresh()?;
    let cp = v.light().latest_checkpoint(v.node())?;
    let first = v.light().checkpoint_at(v.node(), i.early_height)?;
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
    let mut verdicts: Vec<(String, Verdict)> = vec![
        (
            "regulator: the fine-tune ran under the approved policy".into(),
            fresh()?.policy(i.fine_tune, i.policy)?,
        ),
        (
            "regulator: the base campaign ran under it too".into(),
            fresh()?.policy(i.base, i.policy)?,
        ),
        (
            "operator: model.safetensors is the base plus the recorded deltas".into(),
            fresh()?.model(i.fine_tune, i.model)?,
        ),
    ];
    for s in i.sources.iter().filter(|s| s.manifest.title != i.forged) {
        verdicts.push((
            format!("rights-holder: {} used only within its terms", s.manifest.title),
            fresh()?.source(&s.manifest.source_id(), false)?,
        ));
    }
    for (what, verdict) in &verdicts {
        let detail = verdict.render();
        let detail = detail.lines().next().unwrap_or("");
        let detail = detail.split_once(": ").map(|x| x.1).unwrap_or(detail);
        predicates.push((format!("{what} ({detail})"), verdict.pass));
    }
    for tr in i.traces {
        predicates.push((format!("trace: {}", tr.label), tr.verified));
    }
    for (what, pass) in &predicates {
        println!("  {} {what}", if *pass { "PASS" } else { "FAIL" });
    }
    Ok(predicates)
}

/// Examples refused per (source title, reason) in a campaign's chain.
pub(super) fn refusal_counts(
    chain: &[EntryBody],
    sources: &[SignedSource],
) -> BTreeMap<(String, RefusalReason), u64> {
    let title_of = |d: &Digest| -> String {
        sources
            .iter()
            .find(|s| &s.manifest.source_id() == d)
            .map(|s| s.manifest.title.clone())
            .unwrap_or_else(|| d.short())
    };
    let mut counts: BTreeMap<(String, RefusalReason), u64> = BTreeMap::new();
    for b in chain {
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
    counts
}

/// The report's row of each source: its admission outcome (the refusal
/// reasons other than memorisation) and its admitted and refused counts
/// from the campaign's close.
pub(super) fn demo_sources(
    sources: &[SignedSource],
    counts: &BTreeMap<(String, RefusalReason), u64>,
    close: Option<&CampaignClose>,
    forged: &str,
) -> Vec<DemoSource> {
    sources
        .iter()
        .map(|s| {
            let id = s.manifest.source_id();
            let reasons: Vec<String> = counts
                .iter()
                .filter(|((title, r), _)| title == &s.manifest.title && *r != RefusalReason::Memorisation)
                .map(|((_, r), _)| r.to_string())
                .collect();
            let (admitted, refused) = close
                .iter()
                .flat_map(|c| c.per_source.iter())
                .find(|p| p.source == id)
                .map(|p| (p.admitted, p.refused))
                .unwrap_or((0, 0));
            DemoSource {
                title: s.manifest.title.clone(),
                id,
                authority: s.manifest.authority.to_string(),
                registered: s.manifest.title != forged,
                admission: if reasons.is_empty() {
                    "admitted".into()
                } else {
                    reasons.join(", ")
                },
                admitted,
                refused,
            }
        })
        .collect()
}

/// What the three traces are asked of.
pub(super) struct TraceInputs<'a> {
    /// A data-source node, which answers the traces.
    pub node: &'a Client,
    /// The demo's folder (answers go to `traces/`).
    pub dir: &'a Path,
    /// The campaign file.
    pub cfg: &'a DemoConfig,
    /// Its `[demo]` table.
    pub plan: &'a DemoPlan,
    /// The source holding the traced canary.
    pub traced_pos: usize,
    /// The genesis file.
    pub genesis: &'a Path,
    /// The fine-tune.
    pub campaign: &'a Digest,
    /// The sources offered to the tuner.
    pub sources: &'a [SignedSource],
    /// The base model's weights.
    pub base: &'a Weights,
    /// The fine-tuned adapters.
    pub model: &'a [u8],
}

/// The traces and what they rest on.
pub(super) struct Traced {
    /// The fine-tune as a light client verified it.
    pub vc: VerifiedCampaign,
    /// Each trace, written and verified.
    pub traces: Vec<DemoTrace>,
    /// Each node's answer.
    pub answers: Vec<TraceAnswer>,
}

/// Three outputs traced and each answer verified as a light client: a
/// planted canary below the memorisation threshold (its scores also
/// recomputed), a window of the last training event from a full-depth
/// source without a canary, and the fine-tuned model's continuation of a
/// held-out prompt.
pub(super) fn trace_outputs(i: &TraceInputs<'_>) -> Result<Traced, TestnetError> {
    let window = i.cfg.settings.model.window();
    let traces_dir = i.dir.join("traces");
    std::fs::create_dir_all(&traces_dir)?;
    let mut queries: Vec<(String, String, String)> = Vec::new();
    let below = i
        .cfg
        .canaries
        .iter()
        .find(|c| c.source == i.traced_pos)
        .ok_or_else(|| {
            TestnetError::Run(format!(
                "[demo] traced_canary: no canary is planted in {:?}",
                i.plan.traced_canary
            ))
        })?;
    // As the tracing evaluation asks it: prompt = the canary's prefix,
    // output = its secret.
    queries.push((
        format!(
            "canary below the threshold (in {})",
            i.cfg.sources[below.source].terms.title
        ),
        below.canary.prefix.clone(),
        below.canary.secret.clone(),
    ));
    let vc = Verifier::new(i.genesis, i.node.clone())?.campaign(i.campaign)?;
    // A window of the campaign's last training event (the latest trained,
    // scored against the query states nearest to the final model: the first
    // steps are scored against the step-0 adapters, whose LoRA `B = 0`
    // makes the query gradient degenerate), from a source admitted at full
    // depth that carries no canary. A depth-limited source's window trains
    // the last layers only; one traced by its own text did not rank its
    // source in the top 3 (docs/tracing.md, "Seen in the demo"); a canary
    // window would repeat query 1.
    let canary_sources: BTreeSet<Digest> = i
        .cfg
        .canaries
        .iter()
        .map(|c| i.sources[c.source].manifest.source_id())
        .collect();
    let full_depth = i.cfg.settings.model.layers as u16;
    let pick = |r: &&provenance::event::ExampleRecord| {
        !canary_sources.contains(&r.source) && r.decision.depth.max_depth >= full_depth
    };
    let trained = vc
        .chain
        .iter()
        .rev()
        .find_map(|b| b.event()?.records.iter().find(pick).map(|r| (r.source, r.index)))
        .ok_or_else(|| TestnetError::Run("the campaign committed no example".into()))?;
    let ts = i
        .sources
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
        &i.cfg.settings,
        i.base,
        i.model,
        i.plan.held_out_prompt.as_bytes(),
        32,
    )?;
    queries.push((
        "the fine-tuned model's continuation of a held-out prompt".into(),
        i.plan.held_out_prompt.clone(),
        String::from_utf8_lossy(&generated).into_owned(),
    ));
    let mut traces = Vec::new();
    let mut answers = Vec::new();
    for (k, (label, prompt, output)) in queries.into_iter().enumerate() {
        let a = lightclient::cli::ask_trace(i.node, i.campaign, &prompt, &output, None)?;
        let file = traces_dir.join(format!("trace-{}.json", k + 1));
        std::fs::write(&file, serde_json::to_string_pretty(&a)?)?;
        let mut v = Verifier::new(i.genesis, i.node.clone())?;
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
    Ok(Traced { vc, traces, answers })
}

/// Which of the campaign file's sources the demo treats specially.
pub(super) struct Picks {
    /// Offered to the tuner with a borrowed (forged) signature.
    pub forged: usize,
    /// Revoked before the campaign opens.
    pub revoke_before: usize,
}

/// What registration leaves for the campaigns.
pub(super) struct Registered {
    /// The committed policy.
    pub policy_id: Digest,
    /// The base campaign's sources, signed on the ledger.
    pub base_sources: Vec<SignedSource>,
    /// The fine-tune's sources (the forged one with its borrowed signature).
    pub sources: Vec<SignedSource>,
    /// The revocation made before the campaign.
    pub revocations: Vec<EffectiveRevocation>,
    /// A certified height from before the campaigns.
    pub early_height: u64,
    /// The clock the file's validity windows were shifted to (ms).
    pub now: u64,
}

/// Governance publishes the policy; each rights-holder registers its
/// plays at its own node (all but the forged one); the campaign file's
/// validity windows shift to now; one source is revoked before the
/// campaign.
pub(super) fn register(
    t: &Testnet,
    reader: &Client,
    cfg: &mut DemoConfig,
    picks: &Picks,
) -> Result<Registered, TestnetError> {
    let now = now_ms();
    shift_windows(cfg, now);
    let policy_id = publish_policy(t, &cfg.policy)?;
    let window = cfg.settings.model.window();
    let base_prepared = prepare_sources(&cfg.base_sources, &[], window, cfg.consortium_seed ^ 1)?;
    let prepared = prepare_sources(&cfg.sources, &cfg.canaries, window, cfg.consortium_seed)?;
    let registered: Vec<_> = prepared
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != picks.forged)
        .map(|(_, p)| p.clone())
        .collect();
    let mut ids = register_sources(t, &base_prepared)?;
    ids.extend(register_sources(t, &registered)?);
    ids.push(policy_id);
    reader.wait_committed(&ids, Duration::from_secs(120))?;
    let size = reader.health()?.log_size;
    let early_height = wait_certified(reader, size)?;
    println!(
        "  policy {} (licenses {:?}, purposes {:?}) committed",
        policy_id.short(),
        cfg.policy.admissible_licenses,
        cfg.policy.admissible_purposes
    );
    let base_sources = base_prepared
        .into_iter()
        .map(|p| signed_source(reader, p))
        .collect::<Result<Vec<_>, _>>()?;
    let mut sources: Vec<SignedSource> = Vec::new();
    for (i, p) in prepared.iter().enumerate() {
        let s = if i == picks.forged {
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
            let signature = signature_of(reader, &other)?
                .ok_or_else(|| TestnetError::Run("the borrowed signature is not on the ledger".into()))?;
            SignedSource {
                manifest: p.manifest.clone(),
                signature,
                text: p.text.clone(),
                salt: p.salt,
            }
        } else {
            signed_source(reader, p.clone())?
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
            if i == picks.forged {
                "(not registered: forged signature)"
            } else {
                m.data_class.as_str()
            }
        );
        sources.push(s);
    }
    // One rights-holder withdraws a source before the campaign opens.
    let revoked_before = sources[picks.revoke_before].manifest.source_id();
    let effective = revoke(
        t,
        reader,
        &sources[picks.revoke_before],
        "consent withdrawn before the campaign",
    )?;
    println!(
        "  {} revoked by {} (effective {})",
        sources[picks.revoke_before].manifest.title,
        sources[picks.revoke_before].manifest.authority,
        effective.0
    );
    let revocations = vec![EffectiveRevocation {
        source: revoked_before,
        effective,
    }];
    Ok(Registered {
        policy_id,
        base_sources,
        sources,
        revocations,
        early_height,
        now,
    })
}
