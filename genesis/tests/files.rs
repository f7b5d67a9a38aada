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
        assert_eq!(keys.validator, Some(i as u16));
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
    // A declared scheme and a signing member.
    let more = text.replace(
        "role = \"data-source\"\n",
        "role = \"data-source\"\nscheme = \"ed25519\"\nthreshold = 1\n",
    ) + "[[authority.node]]\nname = \"globe-2\"\np2p_listen = \"/ip4/127.0.0.1/tcp/7102\"\napi_listen = \"127.0.0.1:8102\"\nsigning_member = true\n";
    let d = parse_description(&more).expect("parses");
    let a = &d.authorities[0];
    assert_eq!(a.scheme, provenance::crypto::SignatureScheme::Ed25519);
    assert_eq!(a.threshold, Some(1));
    assert!(!a.nodes[0].signing_member && a.nodes[1].signing_member);
    assert!(parse_description(&more.replace("\"ed25519\"", "\"rsa\"")).is_err());
}

/// Every secret field of a node key file (JSON), with its path.
fn secret_fields(v: &serde_json::Value, path: &str, out: &mut Vec<(String, String)>) {
    const SECRET: [&str; 5] = [
        "node_secret",
        "consortium_share",
        "bls_share",
        "ed25519_secret",
        "ml_dsa_seed",
    ];
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                let p = format!("{path}/{k}");
                match v {
                    serde_json::Value::String(s) if SECRET.contains(&k.as_str()) => out.push((p, s.clone())),
                    _ => secret_fields(v, &p, out),
                }
            }
        }
        serde_json::Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                secret_fields(v, &format!("{path}/{i}"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn authority_2_of_3_key_files_share_no_secret_key_material() {
    // globe-press runs three nodes signing 2-of-3: one validator, two
    // signing members.
    let mut desc = ConsortiumDescription::local_testnet(7100, 8100);
    desc.authorities[0].threshold = Some(1);
    for i in 1..3u16 {
        desc.authorities[0]
            .nodes
            .push(provenance::genesis::NodeDescription {
                name: format!("globe-{i}"),
                p2p_listen: format!("/ip4/127.0.0.1/tcp/{}", 7190 + i),
                api_listen: format!("127.0.0.1:{}", 8190 + i),
                signing_member: true,
                api_certificate: Default::default(),
            });
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(4);
    let c = ceremony(&desc, Timestamp(1), &mut rng).expect("ceremony");
    write_ceremony(dir.path(), &c).expect("write");
    let (g, keyring) = load_genesis(&dir.path().join("genesis.json")).expect("genesis loads");
    let mut seen: std::collections::BTreeMap<String, String> = Default::default();
    let mut validators = 0;
    for node in &g.nodes {
        let nd = dir.path().join("nodes").join(&node.name);
        let keys = load_node_keys(&nd.join("node.key"), &g, &keyring).expect("keys load");
        validators += usize::from(keys.validator.is_some());
        let text = fs::read_to_string(nd.join("node.key")).expect("read");
        let json: serde_json::Value = serde_json::from_str(&text).expect("json");
        let mut found = Vec::new();
        secret_fields(&json, "", &mut found);
        for f in ["admin.token", "api.key"] {
            found.push((f.to_string(), fs::read_to_string(nd.join(f)).expect("read")));
        }
        // Its own identity, BLS share, Ed25519 key, ML-DSA seed, admin
        // token and TLS key, and a validator's consortium share.
        assert_eq!(
            found.len(),
            6 + usize::from(keys.validator.is_some()),
            "{}: {found:?}",
            node.name
        );
        for (field, value) in found {
            if let Some(other) = seen.insert(value, format!("{} {field}", node.name)) {
                panic!("{} {field} is identical to {other}", node.name);
            }
        }
    }
    assert_eq!((g.nodes.len(), validators), (6, 4));
}
