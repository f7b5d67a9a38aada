//! Issue 8's must-shows: `govtune demo --short` runs the whole story on a
//! 4-process testnet, and its outcome is then checked from outside, through
//! the API and separate `govtune verify` / `govtune trace` / `govtune audit`
//! runs, never from the demo's own printout:
//!
//! * every node holds the same log (size and root);
//! * a light-client scan of the whole log finds the base campaign, the
//!   fine-tune chained to it, and every refusal reason in its record (the
//!   forged manifest refused for its signature without ever being on the
//!   ledger, the revoked source refused after its revocation);
//! * the canary that stayed below the memorisation threshold traces to its
//!   own source (first or second: which of its windows train depends on
//!   the consortium's order), and the answer verifies;
//! * every predicate passes; the revocation audit is non-empty;
//! * the report is written and displays: headless Chromium renders it to a
//!   screenshot that is not blank.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use lightclient::verify::Verifier;
use provenance::api::TraceAnswer;
use provenance::{Canonical, Digest, EntryBody, RefusalReason};
use testnet::Testnet;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_govtune"))
}

fn govtune(args: &[&str]) -> Output {
    let out = Command::new(bin()).args(args).output().expect("govtune runs");
    eprintln!(
        "$ govtune {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Stops the testnet however the test ends.
struct Running(Testnet);

/// The last panic's message, printed again after the nodes' log tails so
/// that it ends the test's output (CI keeps the head and the tail).
static FAILURE: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

fn remember_failures() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if let Ok(mut f) = FAILURE.lock() {
            *f = Some(info.to_string());
        }
        default(info);
    }));
}

impl Drop for Running {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.dump_log_tails(40);
            if let Some(m) = FAILURE.lock().ok().and_then(|mut f| f.take()) {
                eprintln!("---- the failure, again ----\n{m}");
            }
        }
        let _ = self.0.down();
    }
}

/// Renders `page` in headless Chromium; returns the screenshot.
fn screenshot(page: &Path, out: &Path) -> PathBuf {
    let profile = tempfile::tempdir().expect("tmp");
    let chromium = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("Chromium is installed (.ci/run installs Debian's chromium)");
    let status = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1200,1800",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", out.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs");
    assert!(
        out.exists(),
        "no screenshot: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    out.to_path_buf()
}

/// Share of pixels that differ from the most common colour, and the number
/// of distinct colours.
fn ink(png_file: &Path) -> (f64, usize) {
    let decoder = png::Decoder::new(std::fs::File::open(png_file).expect("png"));
    let mut reader = decoder.read_info().expect("png header");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("png frame");
    let px = info.color_type.samples();
    let pixels: Vec<&[u8]> = buf[..info.buffer_size()]
        .chunks(px)
        .map(|p| &p[..3.min(px)])
        .collect();
    let mut counts: BTreeMap<&[u8], usize> = BTreeMap::new();
    for p in &pixels {
        *counts.entry(p).or_default() += 1;
    }
    let top = counts.values().copied().max().unwrap_or(0);
    (1.0 - top as f64 / pixels.len().max(1) as f64, counts.len())
}

#[test]
fn the_demo_runs_end_to_end_and_its_outcome_verifies_from_outside() {
    remember_failures();
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("demo");
    // A testnet an earlier run left running in the folder: the demo stops
    // and replaces it.
    let old = govtune(&["testnet", "up", "--dir", dir.join("net").to_str().expect("utf8")]);
    assert!(old.status.success(), "testnet up");
    let old_apis: Vec<String> = Testnet::load(&dir.join("net"))
        .expect("the old testnet")
        .nodes
        .iter()
        .map(|n| n.api.clone())
        .collect();
    // From a folder that is not the checkout, with the built-in data.
    let out = Command::new(bin())
        .current_dir(tmp.path())
        .args(["demo", "--dir", "demo", "--short", "--keep-running"])
        .output()
        .expect("govtune runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    eprintln!("$ govtune demo\n{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let config = dir.join("data/demo.toml");
    let t = Running(Testnet::load(&dir.join("net")).expect("the demo left its testnet"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = stdout.lines().chain(stderr.lines()).collect();
    assert!(
        out.status.success(),
        "the demo failed; its last lines:\n{}",
        tail[tail.len().saturating_sub(12)..].join("\n")
    );
    assert!(stdout.contains("replaced the testnet an earlier run left"));
    for api in &old_apis {
        assert!(
            !t.0.nodes.iter().any(|n| &n.api == api) && std::net::TcpStream::connect(api).is_err(),
            "the old testnet's node at {api} was stopped"
        );
    }
    let t = &t.0;

    // Every node holds the same log.
    let status = t.status();
    let first = status[0].clone().expect("node 0 answers");
    assert!(first.1 > 50, "a campaign's worth of entries: {first:?}");
    for s in &status {
        assert_eq!(
            s.as_ref().map(|s| (s.1, &s.2)),
            Some((first.1, &first.2)),
            "{status:?}"
        );
    }
    t.wait_converged(first.1, Duration::from_secs(30))
        .expect("converged");

    // A light client's scan of the whole log.
    let genesis = t.genesis_path();
    let ds = t.by_role("data-source").expect("ds");
    let node = t.client(ds);
    let mut v = Verifier::new(&genesis, node.clone()).expect("verifier");
    let cp = v.light().latest_checkpoint(v.node()).expect("checkpoint");
    let all = v.scan(&cp).expect("scan");
    let mut manifests: BTreeMap<String, Digest> = BTreeMap::new();
    let mut campaigns = Vec::new();
    let mut revoked: BTreeMap<Digest, u64> = BTreeMap::new();
    for (i, e) in &all {
        match &e.body {
            EntryBody::Manifest(m) => {
                manifests.insert(m.title.clone(), m.source_id());
            }
            EntryBody::Campaign(c) => campaigns.push((*i, c.clone())),
            EntryBody::Revocation(r) => {
                revoked.insert(r.source, *i);
            }
            _ => {}
        }
    }
    assert_eq!(manifests.len(), 4 + 9, "4 base plays and 9 registered sources");
    assert!(
        !manifests.contains_key("Measure for Measure"),
        "the forged manifest never reaches the ledger"
    );
    let (ci, fine) = campaigns
        .iter()
        .find(|(_, c)| c.base_model.campaign.is_some())
        .expect("a fine-tune chained to a base");
    let base_id = fine.base_model.campaign.expect("base");
    assert!(
        campaigns.iter().any(|(_, c)| c.digest() == base_id),
        "the base campaign is on the ledger"
    );
    let campaign = fine.digest();
    assert!(
        revoked[&manifests["Cymbeline"]] < *ci,
        "revoked before the campaign"
    );
    assert!(revoked[&manifests["The Winter's Tale"]] > *ci, "revoked after it");

    // Every refusal reason in the fine-tune's record.
    let vc = v.campaign(&campaign).expect("campaign record");
    assert!(vc.record.is_some(), "the campaign closed");
    let mut reasons: BTreeMap<RefusalReason, BTreeSet<Digest>> = BTreeMap::new();
    for b in &vc.chain {
        match b {
            EntryBody::Refusal(r) => {
                for x in &r.examples {
                    reasons.entry(r.reason).or_default().insert(x.source);
                }
            }
            EntryBody::RefusalAggregate(a) => {
                for c in &a.counts {
                    reasons.entry(c.reason).or_default().insert(c.source);
                }
            }
            _ => {}
        }
    }
    for r in RefusalReason::ALL {
        assert!(reasons.contains_key(&r), "no {r} refusal: {reasons:?}");
    }
    let expect = [
        (RefusalReason::Revoked, "Cymbeline"),
        (RefusalReason::OutsideValidityWindow, "The Merchant of Venice"),
        (RefusalReason::License, "A Midsummer Night's Dream"),
        (RefusalReason::Purpose, "The Taming of the Shrew"),
        (RefusalReason::Depth, "The Two Gentlemen of Verona"),
        (RefusalReason::Memorisation, "As You Like It"),
    ];
    for (r, title) in expect {
        assert!(reasons[&r].contains(&manifests[title]), "{title} refused for {r}");
    }
    assert!(
        reasons[&RefusalReason::BadSignature]
            .iter()
            .all(|s| !manifests.values().any(|m| m == s)),
        "the signature refusal is of the unregistered manifest"
    );

    // The canary below the threshold traces to its source; the answer verifies.
    let plan = testnet::demo::DemoPlan::load(&config).expect("[demo]");
    let cfg = tuner::demo::DemoConfig::load(&config).expect("campaign file");
    let canary = cfg
        .canaries
        .iter()
        .find(|c| cfg.sources[c.source].terms.title == plan.traced_canary)
        .expect("the traced canary is planted")
        .canary
        .clone();
    let g = genesis.to_str().expect("utf8").to_string();
    let api = node.base().trim_start_matches("http://").to_string();
    let answer = tmp.path().join("canary.json");
    let c = campaign.to_hex();
    let out = govtune(&[
        "trace",
        "--node",
        &api,
        "--campaign",
        &c,
        "--prompt",
        &canary.prefix,
        "--output",
        &canary.secret,
        "--out",
        answer.to_str().expect("utf8"),
        "--genesis",
        &g,
    ]);
    assert!(out.status.success());
    let a: TraceAnswer =
        serde_json::from_str(&std::fs::read_to_string(&answer).expect("answer")).expect("json");
    // The data order is the consortium's (drawn from a checkpoint
    // signature), so which of the canary's windows train differs by run:
    // its source ranked first in two of three runs and second in the third.
    let rank = a
        .sources
        .iter()
        .position(|s| s.source == manifests[plan.traced_canary.as_str()]);
    assert!(
        rank.is_some_and(|r| r < 2),
        "the canary's own source ranks first or second (ranked {rank:?})"
    );

    // Every predicate, as separate light-client runs.
    let verify = |args: &[&str]| {
        let mut full = vec!["verify", "--genesis", &g, "--node", &api];
        full.extend_from_slice(args);
        let out = govtune(&full);
        assert_eq!(out.status.code(), Some(0), "verify {args:?} must pass");
    };
    verify(&["checkpoint"]);
    // The log certified when the campaign opened is a prefix of today's.
    let opened = node.status(&campaign).expect("status");
    let first = opened
        .state
        .committed()
        .and_then(|c| c.checkpoint.as_ref())
        .expect("the campaign's proof names its checkpoint")
        .height
        .to_string();
    verify(&["consistency", "--first", &first]);
    verify(&["trace", "--answer", answer.to_str().expect("utf8")]);
    let policy = vc.campaign.policy.to_hex();
    verify(&["policy", "--campaign", &c, "--approved", &policy]);
    verify(&["policy", "--campaign", &base_id.to_hex(), "--approved", &policy]);
    let model = dir.join("model.safetensors");
    verify(&[
        "model",
        "--campaign",
        &c,
        "--weights",
        model.to_str().expect("utf8"),
    ]);
    for title in [
        "As You Like It",
        "The Comedy of Errors",
        "Twelfth Night",
        "The Winter's Tale",
    ] {
        verify(&["source", "--id", &manifests[title].to_hex()]);
    }

    // The revocation audit of the source revoked after the campaign.
    let out = govtune(&[
        "audit",
        "revocation",
        "--genesis",
        &g,
        "--node",
        &api,
        "--source",
        &manifests["The Winter's Tale"].to_hex(),
        "--json",
    ]);
    assert!(out.status.success());
    let audit: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(
        audit["steps"].as_array().is_some_and(|s| !s.is_empty()),
        "the audit lists the events that used it"
    );

    // The report, rendered by a browser.
    let report = dir.join("report.html");
    let html = std::fs::read_to_string(&report).expect("the report is written");
    assert!(html.contains("<svg") && html.contains("Refusals by reason"));
    let png = screenshot(&report, &tmp.path().join("report.png"));
    let (share, colours) = ink(&png);
    assert!(
        share > 0.05 && colours > 20,
        "the rendered report is not blank: {:.1}% ink, {colours} colours",
        100.0 * share
    );

    // Every command the demo printed for its live testnet, run as printed
    // (the last stops the testnet).
    let summary: testnet::demo::DemoSummary =
        serde_json::from_str(&std::fs::read_to_string(dir.join("demo.json")).expect("demo.json"))
            .expect("json");
    assert!(summary.commands.len() >= 9, "{:?}", summary.commands);
    for c in &summary.commands {
        assert!(stdout.contains(c.as_str()), "printed: {c}");
        let out = Command::new("sh")
            .current_dir(tmp.path())
            .args(["-c", c])
            .output()
            .expect("sh runs");
        eprintln!(
            "$ {c}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(0), "{c}");
    }
    assert!(
        t.nodes
            .iter()
            .all(|n| std::net::TcpStream::connect(&n.api).is_err()),
        "the last command stopped the testnet"
    );
}
