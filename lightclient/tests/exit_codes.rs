//! `govtune-verify`'s exit codes when nothing can be checked: an
//! unreachable node, a missing genesis or a malformed argument exit 2
//! (could not check), never 1 (the claim does not hold) or 0.

use std::path::{Path, PathBuf};
use std::process::Command;

use provenance::genesis::ConsortiumDescription;
use provenance::Timestamp;

fn genesis_file(dir: &Path) -> PathBuf {
    let c = genesis::ceremony(
        &ConsortiumDescription::local_testnet(7100, 8100),
        Timestamp(1),
        &mut rand::rngs::OsRng,
    )
    .expect("ceremony");
    genesis::write_ceremony(dir, &c).expect("write");
    dir.join("genesis.json")
}

fn verify(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_govtune-verify"))
        .args(args)
        .output()
        .expect("run govtune-verify");
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

const D: &str = "0000000000000000000000000000000000000000000000000000000000000001";

#[test]
fn an_unreachable_node_cannot_be_checked_by_any_predicate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let g = genesis_file(dir.path());
    let g = g.to_str().expect("path");
    let answer = dir.path().join("answer.json");
    let predicates: Vec<Vec<&str>> = vec![
        vec!["checkpoint"],
        vec!["consistency", "--first", "1"],
        vec!["policy", "--campaign", D, "--approved", D],
        vec!["source", "--id", D],
        vec!["model", "--campaign", D, "--weights", g],
    ];
    for p in predicates {
        let mut args = vec!["verify", "--genesis", g, "--node", "127.0.0.1:1"];
        args.extend(p.iter().copied());
        let (code, out) = verify(&args);
        assert_eq!(code, Some(2), "{p:?}: {out}");
    }
    // A trace answer file that does not exist: nothing to check.
    let (code, out) = verify(&[
        "verify",
        "--genesis",
        g,
        "--node",
        "127.0.0.1:1",
        "trace",
        "--answer",
        answer.to_str().expect("path"),
    ]);
    assert_eq!(code, Some(2), "{out}");
    let (code, out) = verify(&[
        "audit",
        "revocation",
        "--genesis",
        g,
        "--node",
        "127.0.0.1:1",
        "--source",
        D,
    ]);
    assert_eq!(code, Some(2), "{out}");
}

#[test]
fn a_missing_genesis_or_a_bad_digest_cannot_be_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope.json");
    let (code, out) = verify(&[
        "verify",
        "--genesis",
        missing.to_str().expect("path"),
        "--node",
        "127.0.0.1:1",
        "checkpoint",
    ]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("nope.json"), "the error names the file: {out}");
    let g = genesis_file(dir.path());
    let (code, out) = verify(&[
        "verify",
        "--genesis",
        g.to_str().expect("path"),
        "--node",
        "127.0.0.1:1",
        "source",
        "--id",
        "not-a-digest",
    ]);
    assert_eq!(code, Some(2), "{out}");
}

#[test]
fn the_binary_says_its_version() {
    let (code, out) = verify(&["--version"]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("govtune-verify "), "{out}");
}
