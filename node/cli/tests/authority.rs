//! An authority of several nodes on a real testnet: globe-press runs three
//! nodes signing 2-of-3 (its validator and two signing members, which
//! follow the chain and co-sign but never vote). With its validator
//! killed, its two members still sign for it: its registrations and every
//! event with its examples commit with its signature, combined from the
//! members' shares, and under replay audits at rate 1 with its ticket and
//! replay combined the same way; a light client verifies them all. The
//! validator, restarted, catches up.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use lightclient::verify::Verifier;
use provenance::crypto::CoSignature;
use provenance::{Attestation, AuthorityId, EntryBody};
use testnet::{NodeSettings, Testnet};

/// The demo's campaign file cut to 6 steps, with the repository's data,
/// under replay audits at rate 1 (every auditor's ticket selects every
/// record) with a clip norm that binds.
fn campaign_file(dir: &Path) -> std::path::PathBuf {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data");
    let audited = |t: String| {
        let t = t
            .replace("checkpoint_every = 50", "checkpoint_every = 3")
            .replace("clip_norm = 1.0", "clip_norm = 0.001")
            .replace("clip_norm = 0.5", "clip_norm = 0.001")
            .replace(
                "signature_scheme = \"bls12381\"\n",
                "signature_scheme = \"bls12381\"\n\n[policy.audit]\nrate_millionths = 1000000\nexample_tolerance = 0.004\n",
            );
        assert!(t.contains("[policy.audit]"), "the policy changed shape");
        t
    };
    testnet::campaign::short_campaign(&data, dir, 6, audited).expect("campaign file")
}

#[test]
fn authority_2_of_3_signs_through_its_signing_members_with_its_validator_down() {
    let dir = tempfile::tempdir().expect("tmp");
    let bin = Path::new(env!("CARGO_BIN_EXE_govtune"));
    let settings = NodeSettings {
        view_timeout_ms: Some(1500),
        heartbeat_ms: Some(300),
        signing_members: vec![("globe-press".into(), 2)],
        ..NodeSettings::default()
    };
    let net = dir.path().join("net");
    let mut t = Testnet::create(&net, 4, bin, &settings).expect("testnet");
    let (g, keyring) = genesis::load_genesis(&t.genesis_path()).expect("genesis");
    let globe = AuthorityId::new("globe-press").expect("id");
    let globe_nodes: Vec<_> = g.nodes_of(&globe).collect();
    assert_eq!(globe_nodes.len(), 3);
    assert_eq!(
        globe_nodes.iter().filter(|n| n.validator.is_some()).count(),
        1,
        "one validator, two signing members"
    );
    assert_eq!((g.consortium.n, g.consortium.f), (4, 1));
    let keys = keyring.authority(&globe).expect("globe");
    assert_eq!((keys.threshold(), keys.members()), (1, 3), "2-of-3");
    t.start_all().expect("start");
    t.wait_all_healthy(Duration::from_secs(120)).expect("healthy");

    // Globe's validator goes down: three validators of four carry
    // consensus, and globe signs with its two signing members.
    let validator = t.find("0").expect("node-0");
    assert_eq!(t.nodes[validator].authority, "globe-press");
    t.kill(validator).expect("kill");

    let out = Command::new(bin)
        .args(["campaign", "run", "--config"])
        .arg(campaign_file(dir.path()))
        .arg("--testnet")
        .arg(&net)
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("stop: Finished"), "{stdout}");
    let campaign = stdout
        .lines()
        .find_map(|l| l.strip_prefix("campaign ").filter(|d| d.len() == 64))
        .and_then(|d| provenance::Digest::from_hex(d).ok())
        .expect("campaign digest");

    // A light client of another authority's node checks every entry's
    // signatures; globe's appear on its registrations and on every step
    // event with its examples.
    let folio = t.find("1").expect("node-1");
    let mut v = Verifier::new(&t.genesis_path(), t.client(folio)).expect("verifier");
    let cp = v.latest().expect("checkpoint");
    let entries = v.scan(&cp).expect("every entry verifies");
    let position = keys.position;
    let signed_by_globe = |a: &Attestation| match a {
        Attestation::Authorities(CoSignature::Bls { signers, .. }) => signers
            .positions(keyring.authorities().len())
            .is_ok_and(|p| p.contains(&position)),
        _ => false,
    };
    let globe_sources: Vec<_> = entries
        .iter()
        .filter_map(|(_, e)| match &e.body {
            EntryBody::Manifest(m) if m.authority == globe => {
                assert!(signed_by_globe(&e.attestation), "globe's manifest");
                Some(m.source_id())
            }
            _ => None,
        })
        .collect();
    assert!(!globe_sources.is_empty(), "globe registered its sources");
    let mut globe_events = 0;
    let mut events = 0;
    for (_, e) in &entries {
        if let Some(ev) = e.body.event() {
            events += 1;
            if ev.records.iter().any(|x| globe_sources.contains(&x.source)) {
                assert!(signed_by_globe(&e.attestation), "an event with globe's examples");
                globe_events += 1;
            }
        }
    }
    assert!(
        globe_events > 0,
        "none of {events} events used globe's examples (its sources: {globe_sources:?})"
    );
    // Its tickets and replays, combined from its members' shares, are
    // valid, and every record they select was replayed.
    let verdict = v.audits(&campaign, false).expect("audits");
    assert!(verdict.pass, "{}", verdict.render());
    let note = format!("globe-press: audits {globe_events} records, {globe_events} tickets, {globe_events} selected, {globe_events} replayed");
    assert!(verdict.notes.contains(&note), "{note}\n{}", verdict.render());

    // The validator comes back and catches up: every node, members
    // included, holds the same log.
    t.start(validator).expect("restart");
    let size = cp.checkpoint.size;
    t.wait_converged(size, Duration::from_secs(120))
        .expect("converged");
    t.down().expect("down");
}
