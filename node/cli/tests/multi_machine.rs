//! `docs/multi-machine.md`, run: every `sh` block of the page verbatim, in
//! order, with the page's own host addresses (203.0.113.10 to .13), in a
//! network namespace made for the test that holds them all (only `DATA`,
//! the clone's data folder, is set after the first block), over https with each role
//! using only its own folder's token: ceremony, hand-over, four node
//! processes, a policy, two sources registered with their command, the
//! operator's campaign from the packages, a verified trace, model and
//! source checks, a revocation and a superseding policy. Around it, what
//! the page promises about salts and packages is checked.

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use testnet::netns::{self, Lab};

const PAGE: &str = include_str!("../../../docs/multi-machine.md");

/// The page's `sh` blocks, in order.
fn shell_blocks(page: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in page.lines() {
        match &mut current {
            None if line.trim_end() == "```sh" => current = Some(String::new()),
            Some(b) if line.trim_end() == "```" => {
                blocks.push(std::mem::take(b));
                current = None;
            }
            Some(b) => {
                b.push_str(line);
                b.push('\n');
            }
            None => {}
        }
    }
    blocks
}

/// Kills the nodes the page started, whatever happens to the test.
struct Nodes(PathBuf);

impl Drop for Nodes {
    fn drop(&mut self) {
        for n in ["globe-1", "folio-1", "board-1", "lab-1"] {
            if let Ok(pid) = std::fs::read_to_string(self.0.join(n).join("node.pid")) {
                let _ = Command::new("kill").arg(pid.trim()).status();
            }
        }
    }
}

/// The page's first block (the hosts) as written, then `DATA` set to this
/// clone's data folder.
fn hosts(first: &str, data: &Path) -> String {
    format!("{first}DATA={}\n", data.display())
}

/// The host addresses the page's first block sets.
fn addresses(first: &str) -> Vec<Ipv4Addr> {
    first
        .lines()
        .filter_map(|l| l.split_once('=')?.1.split_whitespace().next()?.parse().ok())
        .collect()
}

/// Runs `script` with bash (errexit, pipefail) in `dir`, inside the lab's
/// namespace, `govtune` on the PATH; returns its exit code and output.
fn bash(lab: &Lab, dir: &Path, script: &str) -> (Option<i32>, String) {
    let bin = Path::new(env!("CARGO_BIN_EXE_govtune"));
    let path = format!(
        "{}:{}",
        bin.parent().expect("bin dir").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = lab
        .command("doc", "bash")
        .expect("the lab's host")
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(dir)
        .env("PATH", path)
        .env_remove("GOVTUNE_NODE")
        .env_remove("GOVTUNE_TOKEN_FILE")
        .env_remove("GOVTUNE_GENESIS")
        .output()
        .expect("bash");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
}

fn example_root(output: &str) -> String {
    output
        .lines()
        .find_map(|l| l.split("example root ").nth(1))
        .unwrap_or_else(|| panic!("no example root in {output}"))
        .trim()
        .to_string()
}

#[test]
fn multi_host_procedure_runs_verbatim_over_https() {
    let blocks = shell_blocks(PAGE);
    assert!(blocks.len() >= 10, "the page has {} sh blocks", blocks.len());
    assert!(
        blocks[0].contains("GLOBE=") && blocks[0].contains("LAB="),
        "the first block sets the hosts: {}",
        blocks[0]
    );
    let addrs = addresses(&blocks[0]);
    assert_eq!(addrs.len(), 4, "four hosts: {addrs:?}");
    let lab = match Lab::single("doc", &addrs) {
        Ok(lab) => lab,
        Err(e) if netns::may_skip() => {
            eprintln!("skipped ({} is set): {e}", netns::SKIP_VAR);
            return;
        }
        Err(e) => panic!("cannot make the test's network namespace (run as root with iproute2): {e}"),
    };
    let started = std::time::Instant::now();
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    let _nodes = Nodes(root.to_path_buf());
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data");
    let vars = hosts(&blocks[0], &std::fs::canonicalize(data).expect("data"));
    let bash = |dir: &Path, script: &str| bash(&lab, dir, script);
    let (last, body) = blocks[1..].split_last().expect("blocks");
    let mut audits = None;
    for (i, block) in body.iter().enumerate() {
        let (code, out) = bash(root, &format!("{vars}{block}"));
        println!("--- block {}:\n{block}--- output:\n{out}", i + 1);
        assert_eq!(code, Some(0), "block {} failed:\n{block}\n{out}", i + 1);
        if block.contains(" audits --campaign ") {
            audits = Some(out);
        }
    }
    // The policy audits: each co-signer left a ticket on every record and
    // replayed the ones it selects (governance from the operator's batches
    // over p2p, the rights-holders from the packages in their nodes'
    // sources/), and some were selected.
    let audits = audits.expect("the page verifies the audits");
    assert!(audits.contains("PASS audits"), "{audits}");
    let replayed: u64 = audits
        .lines()
        .filter_map(|l| l.split(" selected, ").nth(1))
        .filter_map(|r| r.split(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(replayed > 0, "no record was replayed:\n{audits}");

    // The salt: 32 bytes, 0600; the package 0600.
    let salt = root.join("globe-1/as_you_like_it.txt.salt");
    assert_eq!(std::fs::read(&salt).expect("salt").len(), 32);
    assert_eq!(mode(&salt), 0o600);
    assert_eq!(mode(&root.join("globe-1/as_you_like_it.txt.package")), 0o600);
    assert_eq!(mode(&root.join("globe-1/api.key")), 0o600);
    let first = std::fs::read_to_string(root.join("globe-1/register.out")).expect("register.out");

    // The same text and terms registered again: another salt, another root.
    let again = root.join("globe-1/again");
    std::fs::create_dir_all(&again).expect("dir");
    for f in ["as_you_like_it.txt", "as_you_like_it.toml"] {
        std::fs::copy(root.join("globe-1").join(f), again.join(f)).expect("copy");
    }
    let (code, out) = bash(
        root,
        &format!(
            "{vars}govtune source register --node https://$GLOBE:8100 --token-file globe-1/admin.token \
             --genesis globe-1/genesis.json --terms globe-1/again/as_you_like_it.toml"
        ),
    );
    assert_eq!(code, Some(0), "{out}");
    assert_ne!(
        example_root(&first),
        example_root(&out),
        "one text, two registrations, one root"
    );
    assert_ne!(
        std::fs::read(&salt).expect("salt"),
        std::fs::read(again.join("as_you_like_it.txt.salt")).expect("salt")
    );
    // A second registration never overwrites the first's salt.
    let (code, out) = bash(
        root,
        &format!(
            "{vars}govtune source register --node https://$GLOBE:8100 --token-file globe-1/admin.token \
             --genesis globe-1/genesis.json --terms globe-1/as_you_like_it.toml"
        ),
    );
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("was registered already"), "{out}");

    // The operator's tooling trains only from packages: none, or one whose
    // salt is not the rights-holder's, is refused before anything is sent.
    let run = |packages: &str| {
        bash(
            root,
            &format!(
                "{vars}govtune campaign run --node https://$LAB:8100 --token-file lab-1/admin.token \
                 --genesis lab-1/genesis.json --config lab-1/campaign.toml {packages}"
            ),
        )
    };
    let (code, out) = run("");
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("no source package"), "{out}");
    let pkg = root.join("lab-1/as_you_like_it.txt.package");
    let mut p: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&pkg).expect("package")).expect("json");
    p["salt"] = serde_json::Value::String("00".repeat(32));
    let forged = root.join("lab-1/forged.package");
    genesis::write_new(&forged, p.to_string().as_bytes(), 0o600).expect("forged package");
    let (code, out) = run("--package lab-1/forged.package");
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("do not give the manifest's example root"), "{out}");

    // A token file readable by others is refused.
    std::fs::set_permissions(
        root.join("lab-1/admin.token"),
        std::fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    let (code, out) = run("--package lab-1/as_you_like_it.txt.package");
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("must be 0600"), "{out}");

    let (code, out) = bash(root, &format!("{vars}{last}"));
    assert_eq!(code, Some(0), "stopping: {out}");
    println!(
        "the page ran in {:.0} s on its own addresses",
        started.elapsed().as_secs_f64()
    );
}
