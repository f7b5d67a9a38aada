//! `govtune campaign run` against a 4-process testnet: the tuner's steps
//! are co-signed by all four authorities and committed, the campaign
//! closes, and every node holds the same log.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use provenance::Digest;
use testnet::{NodeSettings, Testnet};

#[test]
fn a_governed_campaign_runs_through_the_operator_node_and_closes() {
    let dir = tempfile::tempdir().expect("tmp");
    let bin = Path::new(env!("CARGO_BIN_EXE_govtune"));
    let settings = NodeSettings {
        view_timeout_ms: Some(1500),
        heartbeat_ms: Some(300),
        max_block_entries: None,
        ..NodeSettings::default()
    };
    let mut t = Testnet::create(&dir.path().join("net"), 4, bin, &settings).expect("testnet");
    t.start_all().expect("start");
    t.wait_all_healthy(Duration::from_secs(120)).expect("healthy");

    // The demo campaign, cut to 6 steps, with the repository's data.
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data");
    let text = std::fs::read_to_string(data.join("campaign.toml")).expect("campaign file");
    let text = text
        .replace("max_steps = 200", "max_steps = 6")
        .replace("checkpoint_every = 50", "checkpoint_every = 3")
        .replace("path = \"", &format!("path = \"{}/", data.display()))
        .replace(
            "base_weights = \"",
            &format!("base_weights = \"{}/", data.display()),
        )
        .replace("probe = \"", &format!("probe = \"{}/", data.display()));
    assert!(text.contains("max_steps = 6"), "the campaign file changed shape");
    let config = dir.path().join("campaign.toml");
    std::fs::write(&config, text).expect("write");

    let out = Command::new(bin)
        .args(["campaign", "run", "--config"])
        .arg(&config)
        .arg("--testnet")
        .arg(dir.path().join("net"))
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("stop: Finished"), "{stdout}");
    assert!(stdout.contains("steps 6 "), "{stdout}");
    let campaign = stdout
        .lines()
        .find_map(|l| l.strip_prefix("campaign ").filter(|d| d.len() == 64))
        .expect("campaign digest");

    // 1 policy + 8 sources + campaign + 6 step records + close.
    let (size, _) = t.wait_converged(17, Duration::from_secs(60)).expect("converged");
    assert_eq!(size, 17);
    let c = t
        .client(0)
        .campaign(&Digest::from_hex(campaign).expect("hex"))
        .expect("campaign");
    assert_eq!(c.entries, 6);
    assert!(c.closed.is_some(), "{c:?}");
    // Governance and each data source checked every step's delta against
    // its measurement before signing (a data source only the steps with
    // its examples).
    let gov = t.by_role("governance").expect("governance");
    let metrics = t.client(gov).metrics().expect("metrics");
    let held = metrics
        .lines()
        .find_map(|l| l.strip_prefix("govtune_effects_held_total "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no effect counter in {metrics}"));
    assert_eq!(held, 6, "governance checked each step's effect once");
    assert!(metrics.contains("govtune_effects_broken_total 0"), "{metrics}");
    t.down().expect("down");
}
