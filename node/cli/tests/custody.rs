//! Blob custody on a 4-process testnet. An operator whose node withholds
//! its blobs from its peers (the test binary's `GOVTUNE_WITHHOLD_BLOBS`)
//! submits a campaign signed in due form: no validator votes for a block
//! naming a recipe it lacks, so the campaign does not commit while the
//! ledger goes on finalising blocks. Once the operator's node serves its
//! blobs, the campaign commits; a blob over one wire message's limit
//! reaches another node in parts; and with the operator's node gone, the
//! other nodes still serve the campaign's recipe and base weights. Last,
//! an operator's node that serves other bytes than its blobs
//! (`GOVTUNE_GARBLE_BLOBS`) is banned by the node that fetched from it,
//! which keeps nothing.

use std::path::Path;
use std::time::{Duration, Instant};

use provenance::Digest;
use testnet::campaign::open_on_testnet;
use testnet::{NodeSettings, Testnet};

const OPERATOR: usize = 3;

/// The demo's campaign file cut to 4 steps, written into `dir`.
fn campaign_file(dir: &Path) -> std::path::PathBuf {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data");
    testnet::campaign::short_campaign(&data, dir, 4, |t| t).expect("campaign file")
}

/// Whether node `i` holds blob `d` itself (not fetching it).
fn holds(t: &Testnet, i: usize, d: &Digest) -> bool {
    t.client(i)
        .get_bytes(&format!("/v1/blobs/{}?local=true", d.to_hex()))
        .is_ok_and(|b| tuner::blobs::blob_digest(&b) == *d)
}

fn blob_at(t: &Testnet, i: usize, d: &Digest) -> Result<Vec<u8>, String> {
    t.client(i)
        .with_timeout(Duration::from_secs(120))
        .get_bytes(&format!("/v1/blobs/{}", d.to_hex()))
        .map_err(|e| e.to_string())
}

#[test]
fn blob_custody_a_withholding_operator_cannot_commit_and_committed_blobs_outlive_its_node() {
    let dir = tempfile::tempdir().expect("tmp");
    let net = dir.path().join("net");
    let bin = Path::new(env!("CARGO_BIN_EXE_govtune"));
    let settings = NodeSettings {
        view_timeout_ms: Some(1000),
        heartbeat_ms: Some(300),
        ..NodeSettings::default()
    };
    let mut t = Testnet::create(&net, 4, bin, &settings).expect("testnet");
    for i in 0..OPERATOR {
        t.start(i).expect("start");
    }
    t.start_with(OPERATOR, &[("GOVTUNE_WITHHOLD_BLOBS", "1")])
        .expect("start the operator");
    t.wait_all_healthy(Duration::from_secs(120)).expect("healthy");
    assert_eq!(t.nodes[OPERATOR].authority, "tuning-lab");

    // Policy and sources committed; the operator puts its recipe and base
    // weights at its own node and submits the campaign.
    let (spec, _) = open_on_testnet(&campaign_file(dir.path()), &net).expect("the campaign's inputs");
    let reader = t.client(0);
    let admin = t.admin(OPERATOR).expect("operator's admin client");
    let base_bytes =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/base/model.safetensors"))
            .expect("base weights");
    let recipe = spec.campaign.recipe;
    let weights = tuner::blobs::blob_digest(&base_bytes);
    assert_ne!(recipe, Digest::ZERO);
    let campaign = admin
        .submit("/v1/campaigns", &spec.campaign)
        .expect("the operator's node takes the campaign")
        .digest;

    // Withheld: nothing commits it, the ledger goes on, no other node has
    // the recipe.
    let before = reader.health().expect("health").height;
    std::thread::sleep(Duration::from_secs(12));
    let after = reader.health().expect("health").height;
    assert!(
        after >= before + 5,
        "the ledger goes on finalising blocks: height {before} -> {after}"
    );
    for i in 0..t.nodes.len() {
        let state = t.client(i).status(&campaign).expect("status").state;
        assert!(
            state.committed().is_none(),
            "node {i} committed a campaign whose recipe no other node holds"
        );
    }
    for i in 0..OPERATOR {
        let got = blob_at(&t, i, &recipe);
        assert!(
            got.as_ref().is_err_and(|e| e.contains("404")),
            "node {i}: {got:?}"
        );
    }

    // The operator's node serves its blobs again: the campaign commits.
    t.kill(OPERATOR).expect("kill");
    t.start(OPERATOR).expect("restart");
    let committed_at = Instant::now();
    reader
        .wait_committed(&[campaign], Duration::from_secs(90))
        .expect("the campaign commits once its blobs are served");
    println!(
        "campaign committed {:.1} s after the operator's node served its blobs again",
        committed_at.elapsed().as_secs_f64()
    );
    // Custody: every other node holds the recipe and the base weights
    // itself (the voters before the commit, the rest as it commits).
    let deadline = Instant::now() + Duration::from_secs(20);
    for i in 0..OPERATOR {
        for (what, d) in [("recipe", recipe), ("base weights", weights)] {
            while !holds(&t, i, &d) {
                assert!(
                    Instant::now() < deadline,
                    "node {i} does not hold the campaign's {what}"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }

    // A blob over one wire message's 16 MiB limit crosses in parts.
    let big = testnet::bench::noise(24 << 20, 24);
    let big_digest = t.admin(OPERATOR).expect("admin").put_blob(&big).expect("put");
    let fetched = Instant::now();
    assert!(
        blob_at(&t, 1, &big_digest).expect("node 1 fetches the 24 MiB blob") == big,
        "the bytes node 1 serves are the blob's"
    );
    println!(
        "a 24 MiB blob fetched by another node in {:.2} s",
        fetched.elapsed().as_secs_f64()
    );

    // The operator's node gone: the others serve the campaign's blobs.
    std::thread::sleep(Duration::from_secs(2));
    t.kill(OPERATOR).expect("kill");
    for i in 0..OPERATOR {
        for (what, d) in [("recipe", recipe), ("base weights", weights)] {
            let b = blob_at(&t, i, &d).unwrap_or_else(|e| panic!("node {i}'s {what}: {e}"));
            assert_eq!(tuner::blobs::blob_digest(&b), d, "node {i}'s {what}");
        }
    }

    // An operator's node serving garbled parts is banned; nothing is kept.
    t.start_with(OPERATOR, &[("GOVTUNE_GARBLE_BLOBS", "1")])
        .expect("restart garbling");
    t.wait_healthy(OPERATOR, Duration::from_secs(60))
        .expect("healthy");
    let fresh = testnet::bench::noise(1 << 20, 7);
    let fresh_digest = t.admin(OPERATOR).expect("admin").put_blob(&fresh).expect("put");
    let malformed = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("govtune_misbehaviour_total{kind=\"malformed\"} "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let before = malformed(&t.client(2).metrics().expect("metrics"));
    let deadline = Instant::now() + Duration::from_secs(30);
    // Node 2 fetches it: the parts do not hash to the digest.
    loop {
        let got = blob_at(&t, 2, &fresh_digest);
        assert!(
            got.is_err(),
            "node 2 served a blob only a garbling node has: {got:?}"
        );
        if malformed(&t.client(2).metrics().expect("metrics")) > before {
            break;
        }
        assert!(Instant::now() < deadline, "node 2 never banned the garbling node");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(!holds(&t, 2, &fresh_digest), "node 2 kept garbled bytes");
}
