//! The API over https on a live 4-process testnet: clients holding the
//! genesis accept only the certificate it pins for each node, so a client
//! given another consortium's genesis refuses the node before reading a
//! byte of its API; a node refuses to start with a certificate genesis
//! does not pin for it; plain HTTP is not served beside https; with
//! `log_format = "json"` a node logs one JSON object per line.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use testnet::{NodeSettings, Testnet};

fn govtune(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_govtune"))
        .args(args)
        .output()
        .expect("run govtune")
}

/// A consortium description with the same authorities and addresses as
/// `genesis` (so another ceremony of it pins other certificates).
fn same_addresses(genesis: &Path) -> String {
    let (g, _) = genesis::load_genesis(genesis).expect("genesis");
    let mut text = format!("name = {:?}\n", g.consortium_name);
    for a in &g.authorities {
        text.push_str(&format!(
            "[[authority]]\nid = \"{}\"\nname = {:?}\nrole = \"{}\"\n",
            a.id, a.name, a.role
        ));
        for n in g.nodes.iter().filter(|n| n.authority == a.id) {
            text.push_str(&format!(
                "[[authority.node]]\nname = \"{}\"\np2p_listen = \"{}\"\napi_listen = \"{}\"\n",
                n.name, n.p2p_listen, n.api_listen
            ));
        }
    }
    text
}

#[test]
fn a_client_refuses_a_node_whose_certificate_genesis_does_not_pin() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let settings = NodeSettings {
        tls: true,
        ..NodeSettings::default()
    };
    let mut t = Testnet::create(
        &tmp.path().join("net"),
        4,
        Path::new(env!("CARGO_BIN_EXE_govtune")),
        &settings,
    )
    .expect("testnet");
    t.start_all().expect("start");
    // Health over https, accepting only the pinned certificates.
    t.wait_all_healthy(Duration::from_secs(120))
        .expect("healthy over https");
    let genesis = t.genesis_path();
    let url = t.nodes[0].api.clone();
    assert!(url.starts_with("https://"), "{url}");

    // The genesis's own certificate: the light client verifies over https.
    let ok = govtune(&[
        "verify",
        "checkpoint",
        "--genesis",
        genesis.to_str().unwrap(),
        "--node",
        &url,
    ]);
    assert!(
        ok.status.success(),
        "verify over https: {}{}",
        String::from_utf8_lossy(&ok.stdout),
        String::from_utf8_lossy(&ok.stderr)
    );

    // Another ceremony of the same addresses pins other certificates: a
    // client holding it refuses the node at the TLS handshake (exit 2,
    // nothing checked), not after reading a checkpoint it cannot verify
    // (which would be exit 1).
    let desc = tmp.path().join("other.toml");
    std::fs::write(&desc, same_addresses(&genesis)).expect("description");
    let other = tmp.path().join("other");
    let made = govtune(&[
        "genesis",
        "new",
        "--consortium",
        desc.to_str().unwrap(),
        "--out",
        other.to_str().unwrap(),
    ]);
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let other_genesis = other.join("genesis.json");
    let refused = govtune(&[
        "verify",
        "checkpoint",
        "--genesis",
        other_genesis.to_str().unwrap(),
        "--node",
        &url,
    ]);
    let err =
        String::from_utf8_lossy(&refused.stderr).to_string() + &String::from_utf8_lossy(&refused.stdout);
    assert_eq!(refused.status.code(), Some(2), "{err}");
    assert!(err.to_lowercase().contains("certificate"), "{err}");

    // The same for a trace request and for a role command's client.
    let pinned_other = lightclient::light::LightClient::from_genesis_file(&other_genesis)
        .expect("other genesis")
        .trust(lightclient::Client::new(&url));
    let e = pinned_other.health().expect_err("an unpinned certificate");
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");

    // No plain HTTP beside https.
    let plain = lightclient::Client::new(&url.replace("https://", "http://"));
    assert!(plain.health().is_err(), "plain HTTP answered on the https port");

    // `log_format = "json"`: one JSON object per line.
    let j = 2;
    let cfg = t.nodes[j].config.clone();
    let text = std::fs::read_to_string(&cfg).expect("config");
    std::fs::write(&cfg, format!("{text}log_format = \"json\"\n")).expect("config");
    let before = std::fs::read_to_string(&t.nodes[j].log)
        .map(|l| l.len())
        .unwrap_or(0);
    t.restart(j).expect("restart");
    t.wait_healthy(j, Duration::from_secs(60))
        .expect("healthy with JSON logs");
    let log = std::fs::read_to_string(&t.nodes[j].log).expect("log");
    let lines: Vec<&str> = log[before..].lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "the restarted node logged nothing");
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v.get("level").is_some() && v.get("timestamp").is_some(), "{l}");
    }
    assert!(
        lines.iter().any(|l| l.contains("API on https://")),
        "the start line: {lines:?}"
    );

    // A node given a certificate genesis does not pin for it (node-1's)
    // refuses to start, naming the reason.
    let i = 3;
    let cfg = t.nodes[i].config.clone();
    let text = std::fs::read_to_string(&cfg).expect("config");
    let one = t.dir.join("nodes").join(&t.nodes[1].name);
    let text = text
        .replace(
            "tls_certificate = \"api.crt\"",
            &format!("tls_certificate = {:?}", one.join("api.crt")),
        )
        .replace(
            "tls_key = \"api.key\"",
            &format!("tls_key = {:?}", one.join("api.key")),
        );
    std::fs::write(&cfg, text).expect("config");
    t.restart(i).expect("restart");
    assert!(
        t.wait_healthy(i, Duration::from_secs(10)).is_err(),
        "started with a foreign certificate"
    );
    let log = std::fs::read_to_string(&t.nodes[i].log).expect("log");
    assert!(
        log.contains("not the API certificate genesis pins for this node"),
        "{log}"
    );
    t.down().expect("down");
}
