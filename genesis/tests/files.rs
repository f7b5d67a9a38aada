//! The ceremony's files: written 0600, never overwritten, checked on load.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use genesis::{
    ceremony, load_admin_token, load_genesis, load_node_keys, parse_description, write_ceremony, Error,
};
use provenance::genesis::ConsortiumDescription;
use provenance::Timestamp;
use rand::SeedableRng;

fn run(dir: &std::path::Path) -> genesis::Ceremony {
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(3);
    let c = ceremony(
        &ConsortiumDescription::local_testnet(7100, 8100),
        Timestamp(1),
        &mut rng,
    )
    .expect("ceremony");
    write_ceremony(dir, &c).expect("write");
    c
}

#[test]
fn secret_files_are_0600_and_load_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = run(dir.path());
    let (g, keyring) = load_genesis(&dir.path().join("genesis.json")).expect("genesis loads");
    assert_eq!(g, c.dealt.genesis);
    for (i, node) in g.nodes.iter().enumerate() {
        let nd = dir.path().join("nodes").join(&node.name);
        for f in ["node.key", "admin.token"] {
            let mode = fs::metadata(nd.join(f)).expect("exists").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f}");
        }
        let keys = load_node_keys(&nd.join("node.key"), &g, &keyring).expect("keys load");
        assert_eq!(keys.validator as usize, i);
        assert_eq!(
            load_admin_token(&nd.join("admin.token")).expect("token"),
            c.admin_tokens[i]
        );
        // No secret in Debug output.
        let shown = format!("{keys:?} {:?}", c.dealt.nodes[i]);
        assert!(!shown.contains(&hex::encode(&c.dealt.nodes[i].node_secret.0)));
        assert!(!shown.contains(&hex::encode(&c.dealt.nodes[i].authority.bls_share.0)));
    }
}

#[test]
fn files_are_never_overwritten() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = run(dir.path());
    assert!(matches!(write_ceremony(dir.path(), &c), Err(Error::Io { .. })));
}

#[test]
fn a_world_readable_key_file_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    run(dir.path());
    let (g, keyring) = load_genesis(&dir.path().join("genesis.json")).expect("genesis");
    let key = dir.path().join("nodes/node-0/node.key");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).expect("chmod");
    assert!(matches!(
        load_node_keys(&key, &g, &keyring),
        Err(Error::Permissions { mode: 0o644, .. })
    ));
    let token = dir.path().join("nodes/node-0/admin.token");
    fs::set_permissions(&token, fs::Permissions::from_mode(0o640)).expect("chmod");
    assert!(matches!(load_admin_token(&token), Err(Error::Permissions { .. })));
}

#[test]
fn a_tampered_genesis_or_a_foreign_key_file_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    run(dir.path());
    let path = dir.path().join("genesis.json");
    let text = fs::read_to_string(&path).expect("read");
    let tampered = text.replacen("\"max_clock_skew_ms\": 2000", "\"max_clock_skew_ms\": 2001", 1);
    assert_ne!(tampered, text);
    fs::write(&path, tampered).expect("write");
    let err = load_genesis(&path).expect_err("digest mismatch");
    assert!(err.to_string().contains("digest mismatch"), "{err}");

    // Keys of one consortium do not load against another's genesis.
    let other = tempfile::tempdir().expect("tempdir");
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(99);
    let c2 = ceremony(
        &ConsortiumDescription::local_testnet(7100, 8100),
        Timestamp(1),
        &mut rng,
    )
    .expect("ceremony");
    write_ceremony(other.path(), &c2).expect("write");
    let (g2, k2) = load_genesis(&other.path().join("genesis.json")).expect("genesis");
    let err = load_node_keys(&dir.path().join("nodes/node-0/node.key"), &g2, &k2).expect_err("foreign keys");
    assert!(err.to_string().contains("another genesis"), "{err}");
}

#[test]
fn descriptions_parse_and_bad_ones_are_refused() {
    let text = r#"
name = "press-consortium"
[[authority]]
id = "globe-press"
name = "Globe Press"
role = "data-source"
[[authority.node]]
name = "globe-1"
p2p_listen = "/ip4/127.0.0.1/tcp/7101"
api_listen = "127.0.0.1:8101"
"#;
    let d = parse_description(text).expect("parses");
    assert_eq!(d.authorities.len(), 1);
    assert_eq!(d.max_clock_skew_ms, 2000);
    // A one-authority consortium lacks roles: the ceremony refuses it.
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
    assert!(matches!(
        ceremony(&d, Timestamp(1), &mut rng),
        Err(Error::Genesis(_))
    ));
    assert!(parse_description(&text.replace("data-source", "publisher")).is_err());
    assert!(parse_description(&text.replace("globe-press", "globe press")).is_err());
    assert!(parse_description(&format!("{text}\nunknown = 1\n")).is_err());
}
