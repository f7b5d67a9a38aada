//! A cheating operator on a 4-process testnet (the tuner's test-only
//! `cheat` feature, `GOVTUNE_CHEAT=<mode>`): after two honest steps it
//! ships one dishonest record (`own_seed`: every record is drawn from its
//! own order, so the first), and a co-signer refuses it with the specific
//! reason; nothing of it is committed on any node, the refusal is on
//! `/v1/events/{digest}`, and the campaign stops at its last honest record.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use lightclient::verify::Verifier;
use provenance::api::{EntryState, EntryStatus};
use provenance::Digest;
use testnet::{NodeSettings, Testnet};

/// The demo's campaign file cut to 6 steps, with `edit` applied, written
/// into `dir`.
fn campaign_file(dir: &Path, edit: &dyn Fn(String) -> String) -> std::path::PathBuf {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data");
    let text = std::fs::read_to_string(data.join("campaign.toml")).expect("campaign file");
    let text = edit(
        text.replace("max_steps = 200", "max_steps = 6")
            .replace("checkpoint_every = 50", "checkpoint_every = 3")
            .replace("path = \"", &format!("path = \"{}/", data.display()))
            .replace(
                "base_weights = \"",
                &format!("base_weights = \"{}/", data.display()),
            )
            .replace("probe = \"", &format!("probe = \"{}/", data.display())),
    );
    let config = dir.join("campaign.toml");
    std::fs::write(&config, text).expect("write");
    config
}

/// Runs the demo's campaign file, cut to 6 steps (with `edit` applied),
/// with `GOVTUNE_CHEAT=mode`, checks what every cheat must show, and
/// returns the refusing authority, its reason and the campaign's committed
/// records (the same on every node).
fn cheat(mode: &str, edit: &dyn Fn(String) -> String) -> (String, String, u64) {
    let dir = tempfile::tempdir().expect("tmp");
    let bin = Path::new(env!("CARGO_BIN_EXE_govtune"));
    let settings = NodeSettings {
        view_timeout_ms: Some(1500),
        heartbeat_ms: Some(300),
        ..NodeSettings::default()
    };
    let mut t = Testnet::create(&dir.path().join("net"), 4, bin, &settings).expect("testnet");
    t.start_all().expect("start");
    t.wait_all_healthy(Duration::from_secs(120)).expect("healthy");
    let config = campaign_file(dir.path(), edit);
    let out = Command::new(bin)
        .args(["campaign", "run", "--config"])
        .arg(&config)
        .arg("--testnet")
        .arg(dir.path().join("net"))
        .env("GOVTUNE_CHEAT", mode)
        .env("GOVTUNE_CHEAT_STEP", "2")
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        out.status.code(),
        Some(1),
        "the cheat stops the campaign:\n{stdout}\n{stderr}"
    );
    // "<authority> refused entry <digest>: <reason>"
    let line = stderr
        .lines()
        .find(|l| l.contains(" refused entry "))
        .unwrap_or_else(|| panic!("no refusal in:\n{stderr}"));
    // "... refused entry <digest>: <reason>"
    let reason = line
        .split(" refused entry ")
        .nth(1)
        .and_then(|r| r.get(66..))
        .unwrap_or_default();
    let by = line
        .split(" refused entry ")
        .next()
        .and_then(|l| l.rsplit(' ').next())
        .expect("the refusing authority")
        .to_string();
    let digest = line
        .split(" refused entry ")
        .nth(1)
        .and_then(|r| r.get(..64))
        .and_then(|h| Digest::from_hex(h).ok())
        .expect("the refused entry's digest");
    assert_ne!(by, "tuning-lab", "a co-signer refused, not the operator");
    // The refusal is on /v1/events/{digest}, at the operator's node.
    let op = t.by_role("operator").expect("operator");
    match t.client(op).status(&digest).expect("status").state {
        EntryState::Uncommitted(EntryStatus::Refused { by: b, reason: r }) => {
            assert_eq!(b.as_str(), by);
            assert!(reason.contains(&r) || r.contains(reason), "{r} / {reason}");
        }
        other => panic!("the cheating step is {other:?}"),
    }
    // Nothing of it is committed anywhere; every node holds the same
    // honest records.
    let campaign = stdout
        .lines()
        .find_map(|l| l.strip_prefix("campaign ").filter(|d| d.len() == 64))
        .and_then(|d| Digest::from_hex(d).ok())
        .expect("campaign digest");
    std::thread::sleep(Duration::from_secs(2));
    let entries = t.client(op).campaign(&campaign).expect("campaign").entries;
    for i in 0..t.nodes.len() {
        let c = t.client(i);
        match c.status(&digest) {
            Ok(a) => assert!(
                a.state.committed().is_none(),
                "node {i} committed the cheating step"
            ),
            Err(e) => assert!(e.to_string().contains("404"), "node {i}: {e}"),
        }
        assert_eq!(
            c.campaign(&campaign).expect("campaign").entries,
            entries,
            "node {i}"
        );
    }
    t.down().expect("down");
    (by, reason.to_string(), entries)
}

fn same(s: String) -> String {
    s
}

#[test]
fn cheat_update_routed_out_piece() {
    // Every source of class "letters" (depth 1): the first layers are
    // routed out of every step.
    let (by, reason, entries) = cheat("routed_out", &|s| {
        s.replace(
            "data_class = \"literary\", not_before",
            "data_class = \"letters\", not_before",
        )
    });
    assert_eq!(entries, 2, "the two honest steps");
    assert!(
        reason.contains("effect: the delta changes")
            && reason.contains("which no admitted example of the event is routed to"),
        "{by}: {reason}"
    );
}

#[test]
fn cheat_under_report_norm() {
    let (by, reason, entries) = cheat("under_norm", &same);
    assert_eq!(entries, 2, "the two honest steps");
    assert!(
        reason.contains("effect: block") && reason.contains("norm"),
        "{by}: {reason}"
    );
}

#[test]
fn cheat_reoffer_old_step_under_new_link() {
    let (by, reason, entries) = cheat("replay", &same);
    assert_eq!(entries, 2, "the two honest steps");
    // The old step draws positions already settled: the order check (run
    // before the effect check) names it.
    assert!(
        reason.contains("order: span 16..32: reaches behind position 32, already settled"),
        "{by}: {reason}"
    );
}

#[test]
fn cheat_unrolled_memorisation() {
    let (by, reason, entries) = cheat("memorisation", &same);
    assert_eq!(entries, 2, "the two honest steps");
    assert_eq!(by, "standards-board");
    assert!(reason.contains("must be rolled back and refused"), "{reason}");
}

#[test]
fn cheat_skip_considered_example() {
    let (by, reason, entries) = cheat("skip", &same);
    assert_eq!(entries, 2, "the two honest steps");
    assert!(
        reason.starts_with("order: example")
            && reason.contains("was skipped: admissible, and neither trained nor refused"),
        "{by}: {reason}"
    );
}

/// One source's license is not admissible: its examples are refused and
/// counted in an aggregate after each step.
fn refused_license(s: String) -> String {
    s.replace(
        "title = \"comedy_of_errors\", license = \"CC0-1.0\"",
        "title = \"comedy_of_errors\", license = \"CC-BY-NC-4.0\"",
    )
}

#[test]
fn cheat_inflate_refusal_aggregate() {
    let (by, reason, entries) = cheat("inflate", &refused_license);
    assert_eq!(by, "standards-board", "governance recounts aggregates");
    assert!(
        entries >= 3,
        "honest steps and aggregates before the cheat: {entries}"
    );
    assert!(
        reason.starts_with("order: aggregate over positions") && reason.contains("the order has"),
        "{reason}"
    );
}

#[test]
fn cheat_own_seed_order() {
    let (by, reason, entries) = cheat("own_seed", &same);
    assert_eq!(entries, 0, "refused on its first record");
    assert!(reason.starts_with("order: "), "{by}: {reason}");
}

/// The whole consortium colludes (test-only: co-signing checks and state
/// rules off), so an operator's skipped example and inflated aggregate
/// both commit; the verifiers, recomputing the order from the log, name
/// them: the rights-holder's predicate the example, the regulator's the
/// aggregate.
#[test]
fn collusion_lets_a_skip_and_an_inflated_aggregate_commit_and_the_predicates_name_them() {
    let dir = tempfile::tempdir().expect("tmp");
    let bin = Path::new(env!("CARGO_BIN_EXE_govtune"));
    let settings = NodeSettings {
        view_timeout_ms: Some(1500),
        heartbeat_ms: Some(300),
        collude: ["globe-press", "folio-society", "standards-board", "tuning-lab"]
            .map(String::from)
            .to_vec(),
        ..NodeSettings::default()
    };
    let net = dir.path().join("net");
    let mut t = Testnet::create(&net, 4, bin, &settings).expect("testnet");
    t.start_all().expect("start");
    t.wait_all_healthy(Duration::from_secs(120)).expect("healthy");
    let config = campaign_file(dir.path(), &refused_license);
    let out = Command::new(bin)
        .args(["campaign", "run", "--config"])
        .arg(&config)
        .arg("--testnet")
        .arg(&net)
        .env("GOVTUNE_CHEAT", "skip,inflate")
        .env("GOVTUNE_CHEAT_STEP", "2")
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "colluders commit every record:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let campaign = stdout
        .lines()
        .find_map(|l| l.strip_prefix("campaign ").filter(|d| d.len() == 64))
        .and_then(|d| Digest::from_hex(d).ok())
        .expect("campaign digest");
    // Wait until a checkpoint covers the close.
    let reader = t.client(0);
    for _ in 0..300 {
        let size = reader.health().expect("health").log_size;
        if reader.checkpoint(None).is_ok_and(|c| c.size >= size)
            && reader.campaign(&campaign).is_ok_and(|c| c.closed.is_some())
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let genesis = t.genesis_path();
    let mut v = Verifier::new(&genesis, t.client(0)).expect("verifier");
    let vc = v.campaign(&campaign).expect("the record verifies");
    assert!(vc.record.is_some(), "closed");

    // The regulator: the aggregate is named, with both counts.
    let verdict = v
        .policy(&campaign, &vc.campaign.policy)
        .expect("policy predicate");
    assert!(!verdict.pass);
    assert!(
        verdict.violations.iter().any(|m| m
            .contains("breaks the campaign's data order: aggregate over positions")
            && m.contains("the order has")),
        "{:#?}",
        verdict.violations
    );

    // The rights-holder of the skipped example: its predicate names it,
    // and no event of the campaign trained it.
    let mut sources: Vec<Digest> = vc
        .chain
        .iter()
        .filter_map(|b| b.event())
        .flat_map(|e| e.records.iter().map(|r| r.source))
        .collect();
    sources.sort();
    sources.dedup();
    let mut named = Vec::new();
    for s in &sources {
        let verdict = v.source(s, false).expect("source predicate");
        assert!(!verdict.pass, "every source's order is broken from the skip on");
        for m in &verdict.violations {
            if let Some(rest) = m.split(" drew example ").nth(1) {
                let index: u64 = rest
                    .split(' ')
                    .next()
                    .and_then(|i| i.parse().ok())
                    .expect("index");
                assert!(m.contains("neither trained nor refused it"), "{m}");
                named.push((*s, index));
            }
        }
    }
    assert_eq!(named.len(), 1, "exactly one example is named skipped: {named:?}");
    let trained = vc
        .chain
        .iter()
        .filter_map(|b| b.event())
        .flat_map(|e| e.records.iter().map(|r| (r.source, r.index)))
        .any(|x| x == named[0]);
    assert!(!trained, "the named example was indeed never trained");
    t.down().expect("down");
}
