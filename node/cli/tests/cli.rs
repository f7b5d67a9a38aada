//! `govtune genesis new` and `govtune genesis verify` as a user runs them.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use provenance::Canonical;

fn govtune() -> Command {
    Command::new(env!("CARGO_BIN_EXE_govtune"))
}

#[test]
fn genesis_new_then_verify() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("net");
    let o = govtune()
        .args(["genesis", "new", "--out"])
        .arg(&out)
        .output()
        .expect("runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("n = 4, f = 1, q = 3"), "{stdout}");
    let mode = std::fs::metadata(out.join("nodes/node-3/node.key"))
        .expect("key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let o = govtune()
        .args(["genesis", "verify", "--genesis"])
        .arg(out.join("genesis.json"))
        .output()
        .expect("runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("is valid"));

    // Running again into the same directory refuses to overwrite.
    let o = govtune()
        .args(["genesis", "new", "--out"])
        .arg(&out)
        .output()
        .expect("runs");
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("exists"));
}

#[test]
fn a_consortium_breaking_the_fault_bound_is_refused_with_a_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let desc = dir.path().join("consortium.toml");
    let mut text = String::from("name = \"lopsided\"\n");
    for (id, role, nodes) in [
        ("press", "data-source", 2),
        ("board", "governance", 1),
        ("lab", "operator", 1),
    ] {
        text += &format!("[[authority]]\nid = \"{id}\"\nname = \"{id}\"\nrole = \"{role}\"\n");
        for i in 0..nodes {
            text += &format!(
                "[[authority.node]]\nname = \"{id}-{i}\"\np2p_listen = \"/ip4/127.0.0.1/tcp/0\"\napi_listen = \"127.0.0.1:0\"\n"
            );
        }
    }
    std::fs::write(&desc, text).expect("write");
    let o = govtune()
        .args(["genesis", "new", "--consortium"])
        .arg(&desc)
        .arg("--out")
        .arg(dir.path().join("out"))
        .output()
        .expect("runs");
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("runs 2 validators but f = 1"), "{err}");
    assert!(
        !dir.path().join("out/genesis.json").exists(),
        "nothing written on refusal"
    );
}

/// `genesis verify`'s exit status: 0 valid, 1 read but invalid (its digest
/// or a genesis rule fails), 2 could not be read.
#[test]
fn genesis_verify_exits_0_valid_1_invalid_2_unreadable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = dir.path().join("net");
    let o = govtune()
        .args(["genesis", "new", "--out"])
        .arg(&net)
        .output()
        .expect("runs");
    assert!(o.status.success());
    let good = net.join("genesis.json");
    let verify = |path: &std::path::Path| {
        let o = govtune()
            .args(["genesis", "verify", "--genesis"])
            .arg(path)
            .output()
            .expect("runs");
        (o.status.code(), String::from_utf8_lossy(&o.stderr).to_string())
    };
    assert_eq!(verify(&good).0, Some(0));
    let file: genesis::GenesisFile =
        serde_json::from_str(&std::fs::read_to_string(&good).expect("read")).expect("json");

    // The content changed, the stated digest did not.
    let mut renamed = file.clone();
    renamed.genesis.consortium_name = "another consortium".into();
    let path = dir.path().join("renamed.json");
    std::fs::write(&path, serde_json::to_string(&renamed).expect("json")).expect("write");
    let (code, err) = verify(&path);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("digest mismatch"), "{err}");

    // Its digest holds, a rule does not: f raised beyond (n - 1) / 3.
    let mut lax = file.clone();
    lax.genesis.consortium.f = 2;
    lax.digest = lax.genesis.digest();
    let path = dir.path().join("lax.json");
    std::fs::write(&path, serde_json::to_string(&lax).expect("json")).expect("write");
    let (code, err) = verify(&path);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("FAIL genesis"), "{err}");

    // Nothing to check.
    assert_eq!(verify(&dir.path().join("missing.json")).0, Some(2));
    let path = dir.path().join("truncated.json");
    std::fs::write(&path, "{\"format\":").expect("write");
    assert_eq!(verify(&path).0, Some(2));
}
