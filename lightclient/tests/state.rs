//! `--state`: a verifier holds the newest checkpoint it accepted. A
//! checkpoint the consortium signed over another log of the same size is
//! evidence of a split view (exit 1, both checkpoints printed); an older
//! checkpoint is refused as stale (exit 2, naming the one held). The
//! consortium's keys come from a ceremony run here, so both checkpoints
//! carry valid consortium signatures.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Command;

use lightclient::Client;
use provenance::api::CheckpointAnswer;
use provenance::crypto::ConsortiumSigner;
use provenance::genesis::ConsortiumDescription;
use provenance::{Checkpoint, Digest, SignedCheckpoint, Timestamp};

/// A consortium dealt here, its files written to `dir`: the ceremony (with
/// every validator's key share) and the genesis file's path.
fn consortium(dir: &Path) -> (genesis::Ceremony, std::path::PathBuf) {
    let c = genesis::ceremony(
        &ConsortiumDescription::local_testnet(7100, 8100),
        Timestamp(1),
        &mut rand::rngs::OsRng,
    )
    .expect("ceremony");
    genesis::write_ceremony(dir, &c).expect("write");
    (c, dir.join("genesis.json"))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

/// A checkpoint of `size` leaves with `root` at `height`, signed now by q
/// validators' shares of the consortium key.
fn certified(c: &genesis::Ceremony, size: u64, root: Digest, height: u64) -> SignedCheckpoint {
    certified_at(c, size, root, height, now_ms())
}

/// The same, signed with time `time` (Unix ms).
fn certified_at(c: &genesis::Ceremony, size: u64, root: Digest, height: u64, time: u64) -> SignedCheckpoint {
    let g = &c.dealt.genesis;
    let checkpoint = Checkpoint {
        version: 5,
        origin: g.origin.clone(),
        size,
        root,
        height,
        time: Timestamp(time),
        index: Digest([0x11; 32]),
    };
    let message = checkpoint.signing_message();
    let shares: Vec<_> = c
        .dealt
        .nodes
        .iter()
        .take(g.consortium.q as usize)
        .map(|n| {
            let mut share = [0u8; 32];
            share.copy_from_slice(&n.consortium_share.as_ref().expect("a validator").0);
            ConsortiumSigner::new(n.validator.expect("a validator"), share)
                .expect("share")
                .sign_share(&message)
        })
        .collect();
    let signature = c
        .dealt
        .keyring
        .combine_consortium_shares(&message, &shares)
        .expect("combined");
    SignedCheckpoint {
        checkpoint,
        signature,
        validators: Vec::new(),
    }
}

/// A node that answers `/v1/checkpoint` with `cp` and nothing else.
fn node_serving(cp: SignedCheckpoint) -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    let body = serde_json::to_vec(&CheckpointAnswer::new(&cp, Vec::new(), String::new())).expect("json");
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut r = BufReader::new(conn.try_clone().expect("clone"));
            let mut line = String::new();
            let _ = r.read_line(&mut line);
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
                    break;
                }
            }
            let (status, body) = if line.starts_with("GET /v1/checkpoint ") {
                (200, body.clone())
            } else {
                (404, b"{\"error\":\"not served\"}".to_vec())
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(&body);
        }
    });
    addr
}

fn verify(genesis: &Path, state: &Path, node: &str) -> (Option<i32>, String) {
    run(&[
        "verify",
        "checkpoint",
        "--genesis",
        genesis.to_str().expect("utf8"),
        "--state",
        state.to_str().expect("utf8"),
        "--node",
        node,
    ])
}

fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_govtune-verify"))
        .args(args)
        .output()
        .expect("runs");
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn a_split_view_is_evidence_and_an_older_checkpoint_is_stale() {
    let dir = tempfile::tempdir().expect("tmp");
    let (c, g) = consortium(dir.path());
    let state = dir.path().join("state");

    // First run: the checkpoint of size 10 is accepted and held.
    let a = certified(&c, 10, Digest([1; 32]), 20);
    let (code, out) = verify(&g, &state, &node_serving(a));
    assert_eq!(code, Some(0), "{out}");
    let held = std::fs::read_dir(&state).expect("state written").count();
    assert_eq!(held, 1, "one state file per consortium");

    // Another log of the same size under the consortium's signature.
    let b = certified(&c, 10, Digest([2; 32]), 21);
    let (code, out) = verify(&g, &state, &node_serving(b));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("split view"), "{out}");
    assert!(
        out.contains(&Digest([1; 32]).to_string()) && out.contains(&Digest([2; 32]).to_string()),
        "both checkpoints are printed: {out}"
    );

    // An older checkpoint: could not check, naming the one held.
    let old = certified(&c, 4, Digest([3; 32]), 8);
    let (code, out) = verify(&g, &state, &node_serving(old));
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("older than the one held: height 20, log size 10"),
        "{out}"
    );

    // Without --state the same older checkpoint is accepted.
    let out = Command::new(env!("CARGO_BIN_EXE_govtune-verify"))
        .args(["verify", "checkpoint", "--genesis"])
        .arg(&g)
        .args(["--node", &node_serving(certified(&c, 4, Digest([3; 32]), 8))])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(0));
}

/// Two nodes asked together: the same log passes; two consortium-signed
/// roots for one size are printed as a split view naming each node.
#[test]
fn nodes_asked_together_must_show_one_log() {
    let dir = tempfile::tempdir().expect("tmp");
    let (c, g) = consortium(dir.path());
    let g = g.to_str().expect("utf8");
    let a = node_serving(certified(&c, 10, Digest([1; 32]), 20));
    let same = node_serving(certified(&c, 10, Digest([1; 32]), 21));
    let other = node_serving(certified(&c, 10, Digest([2; 32]), 21));
    let (code, out) = run(&[
        "verify",
        "--genesis",
        g,
        "--node",
        &a,
        "--node",
        &same,
        "checkpoint",
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("is consistent with"), "{out}");
    let (code, out) = run(&[
        "verify",
        "--genesis",
        g,
        "--node",
        &a,
        "--node",
        &other,
        "checkpoint",
    ]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("split view"), "{out}");
    for (node, root) in [(&a, Digest([1; 32])), (&other, Digest([2; 32]))] {
        assert!(
            out.contains(&format!("[{}] origin", Client::new(node).base()))
                && out.contains(&root.to_string()),
            "each signed checkpoint is printed with the node that served it: {out}"
        );
    }
    // The third node answers nothing: the nodes could not be compared.
    let (code, out) = run(&[
        "verify",
        "--genesis",
        g,
        "--node",
        &a,
        "--node",
        "127.0.0.1:1",
        "checkpoint",
    ]);
    assert_eq!(code, Some(2), "{out}");
}

/// `--max-age`: a checkpoint the consortium signed an hour ago is refused
/// by a verifier that accepts ten minutes (exit 2, naming its age), and
/// accepted by one that accepts two hours.
#[test]
fn an_old_checkpoint_is_refused_by_max_age() {
    let dir = tempfile::tempdir().expect("tmp");
    let (c, g) = consortium(dir.path());
    let g = g.to_str().expect("utf8");
    let old = node_serving(certified_at(&c, 10, Digest([1; 32]), 20, now_ms() - 3_600_000));
    let (code, out) = run(&[
        "verify",
        "--genesis",
        g,
        "--node",
        &old,
        "--max-age",
        "600",
        "checkpoint",
    ]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("older than --max-age 600 s"), "{out}");
    let (code, out) = run(&[
        "verify",
        "--genesis",
        g,
        "--node",
        &old,
        "--max-age",
        "7200",
        "checkpoint",
    ]);
    assert_eq!(code, Some(0), "{out}");
    let fresh = node_serving(certified(&c, 10, Digest([1; 32]), 20));
    let (code, out) = run(&[
        "verify",
        "--genesis",
        g,
        "--node",
        &fresh,
        "--max-age",
        "600",
        "checkpoint",
    ]);
    assert_eq!(code, Some(0), "{out}");
}
