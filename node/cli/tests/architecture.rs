//! The crate table in docs/architecture.md is the workspace's real
//! dependency graph, every arrow points down, and the light client builds
//! without RocksDB, libp2p or (by default) candle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

/// crate -> its workspace dependencies, as the doc's table lists them
/// (`name?feature` for an optional one), in table order.
fn documented() -> Vec<(String, BTreeSet<String>)> {
    let doc = std::fs::read_to_string(root().join("docs/architecture.md")).expect("docs/architecture.md");
    let begin = doc.find("<!-- crate-deps: begin -->").expect("begin marker");
    let end = doc.find("<!-- crate-deps: end -->").expect("end marker");
    doc[begin..end]
        .lines()
        .filter(|l| l.starts_with('|') && !l.starts_with("| crate") && !l.starts_with("|---"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let deps = cells[2]
                .split(',')
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .map(str::to_string)
                .collect();
            (cells[1].to_string(), deps)
        })
        .collect()
}

/// crate -> its normal workspace dependencies, from `cargo metadata`.
fn actual() -> BTreeMap<String, BTreeSet<String>> {
    let out = cargo()
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .output()
        .expect("cargo metadata");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let packages = v["packages"].as_array().expect("packages");
    let members: BTreeSet<String> = packages
        .iter()
        .filter_map(|p| p["name"].as_str().map(str::to_string))
        .collect();
    packages
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .expect("dependencies")
                .iter()
                .filter(|d| d["kind"].is_null())
                .filter_map(|d| {
                    let name = d["name"].as_str()?;
                    if !members.contains(name) {
                        return None;
                    }
                    if d["optional"].as_bool() == Some(true) {
                        // The feature that turns it on.
                        let feature = p["features"]
                            .as_object()
                            .and_then(|f| {
                                f.iter().find(|(_, on)| {
                                    on.as_array().is_some_and(|on| {
                                        on.iter().any(|x| x.as_str() == Some(&format!("dep:{name}")))
                                    })
                                })
                            })
                            .map(|(k, _)| k.clone())
                            .unwrap_or_default();
                        Some(format!("{name}?{feature}"))
                    } else {
                        Some(name.to_string())
                    }
                })
                .collect();
            (p["name"].as_str().unwrap_or_default().to_string(), deps)
        })
        .collect()
}

#[test]
fn the_documented_crate_graph_is_the_real_one_and_points_down() {
    let doc = documented();
    let real = actual();
    let listed: BTreeMap<String, BTreeSet<String>> = doc.iter().cloned().collect();
    assert_eq!(
        listed, real,
        "docs/architecture.md's crate table against cargo metadata"
    );
    // Every arrow points down: a crate depends only on crates above it.
    for (i, (name, deps)) in doc.iter().enumerate() {
        for d in deps {
            let d = d.split('?').next().unwrap_or(d);
            let at = doc.iter().position(|(n, _)| n == d);
            assert!(
                at.is_some_and(|at| at < i),
                "{name} depends on {d}, which is not listed above it"
            );
        }
    }
}

fn tree(package: &str, features: &[&str]) -> String {
    let mut c = cargo();
    c.args([
        "tree",
        "--offline",
        "-e",
        "normal",
        "--prefix",
        "none",
        "-p",
        package,
    ]);
    c.args(features);
    let out = c.output().expect("cargo tree");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn crates_in(tree: &str) -> BTreeSet<String> {
    tree.lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn the_light_client_needs_no_rocksdb_libp2p_or_candle() {
    let plain = crates_in(&tree("lightclient", &[]));
    for heavy in ["rocksdb", "librocksdb-sys", "libp2p", "candle-core", "tuner"] {
        assert!(!plain.contains(heavy), "lightclient depends on {heavy}");
    }
    let recompute = crates_in(&tree("lightclient", &["--features", "recompute"]));
    assert!(recompute.contains("candle-core"), "recompute brings the tuner");
    for heavy in ["rocksdb", "librocksdb-sys", "libp2p"] {
        assert!(
            !recompute.contains(heavy),
            "lightclient --features recompute depends on {heavy}"
        );
    }
}

#[test]
fn the_daemon_needs_neither_the_testnet_nor_the_evaluation_lab() {
    let node = crates_in(&tree("node", &[]));
    for other in ["testnet", "lightclient", "roles", "clap", "indicatif"] {
        assert!(!node.contains(other), "node depends on {other}");
    }
}
