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

/// How a hostile node answers.
#[derive(Debug, Clone, Copy)]
enum Hostile {
    /// A body that never ends, with a `Content-Length` of a terabyte.
    FloodWithLength,
    /// A body that never ends, without a length (`Connection: close`,
    /// streamed until the client hangs up).
    Flood,
    /// A `Content-Length` of a terabyte, then nothing: the connection is
    /// held open.
    Stall,
    /// A `Content-Length` of a terabyte, then one byte a second.
    Trickle,
}

/// A node that answers every request the `how` way. Returns its address.
fn hostile_node(how: Hostile) -> String {
    use std::io::{BufRead, BufReader, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut r = BufReader::new(conn.try_clone().expect("clone"));
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
                        break;
                    }
                }
                let head = match how {
                    Hostile::Flood => {
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"
                    }
                    _ => "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000000000000\r\n\r\n",
                };
                if conn.write_all(head.as_bytes()).is_err() {
                    return;
                }
                match how {
                    Hostile::Flood | Hostile::FloodWithLength => {
                        let chunk = vec![b' '; 1 << 16];
                        while conn.write_all(&chunk).is_ok() {}
                    }
                    Hostile::Stall => std::thread::sleep(std::time::Duration::from_secs(120)),
                    Hostile::Trickle => {
                        while conn.write_all(b" ").is_ok() {
                            std::thread::sleep(std::time::Duration::from_secs(1));
                        }
                    }
                }
            });
        }
    });
    addr
}

/// A node cannot exhaust the verifier's memory or time: an endless answer
/// is cut at the client's bound, a stalled or trickling one at the
/// request's time budget (20 s) or the run's `--timeout`, whichever comes
/// first; the check ends with 2 (could not check) within 30 s, the
/// verifier's resident memory under 200 MB.
#[test]
fn an_endless_or_stalled_answer_is_cut_short() {
    let dir = tempfile::tempdir().expect("tempdir");
    let g = genesis_file(dir.path());
    let g = g.to_str().expect("path");
    let runs: [(Hostile, &[&str], u64); 5] = [
        (Hostile::FloodWithLength, &[], 30),
        (Hostile::Flood, &[], 30),
        (Hostile::Stall, &[], 30),
        (Hostile::Trickle, &[], 30),
        // The run's deadline caps every request's budget.
        (Hostile::Stall, &["--timeout", "3"], 10),
    ];
    let mut handles = Vec::new();
    for (how, extra, bound) in runs {
        let g = g.to_string();
        handles.push(std::thread::spawn(move || {
            let node = hostile_node(how);
            let started = std::time::Instant::now();
            let mut args = vec!["verify", "--genesis", &g, "--node", &node];
            args.extend_from_slice(extra);
            args.push("checkpoint");
            let (code, out) = verify(&args);
            let took = started.elapsed();
            assert_eq!(code, Some(2), "{how:?} {extra:?}: {out}");
            assert!(took.as_secs() < bound, "{how:?} {extra:?}: {took:?}: {out}");
            eprintln!("{how:?} {extra:?}: exit 2 after {took:?}");
        }));
    }
    for h in handles {
        h.join().expect("a hostile run");
    }
    // SAFETY: getrusage fills the struct it is given; nothing else is touched.
    let max_rss_kb = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut u);
        u.ru_maxrss
    };
    eprintln!(
        "peak resident memory of the verifier runs: {} MB",
        max_rss_kb / 1024
    );
    assert!(
        max_rss_kb < 200 * 1024,
        "the verifier's peak resident memory was {} MB",
        max_rss_kb / 1024
    );
}
