//! Witnesses outside the consortium (C2SP tlog-witness) with real
//! processes: two `govtune witness` processes cosign a 4-node testnet's
//! checkpoints; a light client refuses a checkpoint with fewer cosignatures
//! than genesis requires; a witness refuses a forked log signed by q
//! validators, before and after a restart; and a checker that is not
//! govtune's (`scripts/check-note.py`, Python) verifies the note and a
//! consistency proof of the real log, and fails on a changed root.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use provenance::api::CheckpointAnswer;
use provenance::{Digest, SignedCheckpoint};
use testnet::workload::Workload;
use testnet::{Client, LightClient, NodeSettings, Testnet, VerifyError};

const MACBETH: &[u8] = include_bytes!("../../../testnet/fixtures/macbeth.txt");
const TWELFTH_NIGHT: &[u8] = include_bytes!("../../../testnet/fixtures/twelfth_night.txt");

/// The demo's campaign file cut to `steps` steps.
fn campaign_file(dir: &Path, steps: u64) -> PathBuf {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data");
    testnet::campaign::short_campaign(&data, dir, steps, |t| t).expect("campaign file")
}

fn govtune() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_govtune"))
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn output(args: &[&str]) -> (i32, String) {
    let o = Command::new(govtune()).args(args).output().expect("govtune runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.code().unwrap_or(-1), text)
}

fn witness_init(dir: &Path, name: &str) -> String {
    let (code, out) = output(&["witness", "init", "--dir", &dir.to_string_lossy(), "--name", name]);
    assert_eq!(code, 0, "{out}");
    out.trim().to_string()
}

fn witness_serve(dir: &Path, port: u16, genesis: &Path) -> Proc {
    let log = std::fs::File::create(dir.join("witness.log")).expect("log");
    let child = Command::new(govtune())
        .args(["witness", "serve", "--dir"])
        .arg(dir)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--genesis"])
        .arg(genesis)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("witness starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "witness on port {port} never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    Proc(child)
}

/// POSTs `body` to `http://127.0.0.1:port/add-checkpoint`: status and body.
fn add_checkpoint(port: u16, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(
        s,
        "POST /add-checkpoint HTTP/1.1\r\nHost: w\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A proxy in front of `upstream` that serves `/v1/checkpoint` changed by
/// `change` and every other GET unchanged.
fn checkpoint_proxy(upstream: Client, change: impl Fn(&mut CheckpointAnswer) + Send + 'static) -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut r = BufReader::new(conn.try_clone().expect("clone"));
            let mut line = String::new();
            if r.read_line(&mut line).is_err() {
                continue;
            }
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
                    break;
                }
            }
            let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
            let body = match upstream.get_bytes(&path) {
                Ok(b) if path.starts_with("/v1/checkpoint") => {
                    let mut a: CheckpointAnswer = serde_json::from_slice(&b).expect("a checkpoint");
                    change(&mut a);
                    serde_json::to_vec(&a).expect("json")
                }
                Ok(b) => b,
                Err(e) => format!("{{\"error\":{:?}}}", e.to_string()).into_bytes(),
            };
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(&body);
        }
    });
    addr
}

/// The node's served checkpoint, once the light client accepts it (with
/// genesis's quorum of cosignatures), it is above `above` in height and it
/// covers at least `min_size` entries.
fn witnessed_above(
    light: &LightClient,
    node: &Client,
    above: u64,
    min_size: u64,
    within: Duration,
) -> (SignedCheckpoint, CheckpointAnswer) {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(a) = node.checkpoint(None) {
            if a.height > above && a.size >= min_size {
                if let Ok(cp) = light.checkpoint_from_answer(&a) {
                    return (cp, a);
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "no witnessed checkpoint above height {above}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `cp` with its root replaced, signed by the note keys of q validators
/// read from their key files (what more than f colluding validators hold).
fn forged(t: &Testnet, cp: &provenance::Checkpoint) -> SignedCheckpoint {
    let (g, keyring) = genesis::load_genesis(&t.genesis_path()).expect("genesis");
    let mut validators: Vec<_> = t
        .nodes
        .iter()
        .take(g.consortium.q as usize)
        .map(|n| {
            genesis::load_node_keys(&n.config.with_file_name("node.key"), &g, &keyring)
                .expect("node keys")
                .sign_note(cp)
                .expect("a validator")
        })
        .collect();
    validators.sort_by_key(|v| v.validator);
    SignedCheckpoint {
        checkpoint: cp.clone(),
        signature: provenance::Bytes::default(),
        validators,
    }
}

fn python_check(args: &[String]) -> (i32, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/check-note.py");
    let o = Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 runs (the test command installs it with python3-cryptography)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.code().unwrap_or(-1), text)
}

#[test]
fn witnesses_cosign_the_log_refuse_a_fork_across_a_restart_and_light_clients_require_their_quorum() {
    let dir = tempfile::tempdir().expect("tmp");
    let wdir: Vec<PathBuf> = (1..=2).map(|i| dir.path().join(format!("w{i}"))).collect();
    let names = ["w1.witness.test/a", "w2.witness.test/b"];
    let vkeys: Vec<String> = wdir.iter().zip(names).map(|(d, n)| witness_init(d, n)).collect();
    let key_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(wdir[0].join("witness.key"))
            .expect("key")
            .permissions(),
    );
    assert_eq!(key_mode & 0o777, 0o600, "a witness key is for its owner only");
    let ports = [free_port(), free_port()];
    let settings = NodeSettings {
        view_timeout_ms: Some(1500),
        heartbeat_ms: Some(300),
        witnesses: vkeys
            .iter()
            .zip(ports)
            .map(|(k, p)| (k.clone(), format!("http://127.0.0.1:{p}")))
            .collect(),
        witness_quorum: Some(2),
        witness_interval_ms: Some(1000),
        ..NodeSettings::default()
    };
    let mut t = Testnet::create(&dir.path().join("net"), 4, govtune(), &settings).expect("testnet");
    let g = t.genesis_path();
    let gs = g.to_string_lossy().to_string();
    let mut w1 = witness_serve(&wdir[0], ports[0], &g);
    let mut w2 = witness_serve(&wdir[1], ports[1], &g);
    t.start_all().expect("start");
    t.wait_all_healthy(Duration::from_secs(120)).expect("healthy");
    let light = LightClient::from_genesis_file(&g).expect("light client");
    let node = t.client(0);

    // Both witnesses cosign: the served checkpoint carries both, and its
    // note carries them as C2SP cosignature lines.
    let mut w =
        Workload::new(&t, &[("Macbeth", MACBETH), ("Twelfth Night", TWELFTH_NIGHT)]).expect("workload");
    w.register(&t).expect("registrations");
    let op = t
        .admin(t.by_role("operator").expect("operator"))
        .expect("operator");
    let registered = op.health().expect("health").log_size;
    assert!(registered > 0, "the log holds the registrations");
    let (cp1, a1) = witnessed_above(&light, &node, 0, registered, Duration::from_secs(60));
    assert_eq!(a1.cosignatures.len(), 2, "{a1:?}");
    for n in names {
        assert!(a1.c2sp.contains(&format!("\u{2014} {n} ")), "{}", a1.c2sp);
    }
    let (code, out) = output(&["verify", "--genesis", &gs, "--node", node.base(), "checkpoint"]);
    assert_eq!(code, 0, "{out}");

    // Fewer cosignatures than genesis requires, or a forged one: refused.
    // (The note text goes too: a note that is not its answer's checkpoint
    // is refused before its cosignatures are counted.)
    let mut fewer = a1.clone();
    fewer.cosignatures.pop();
    fewer.c2sp.clear();
    assert!(matches!(
        light.checkpoint_from_answer(&fewer),
        Err(VerifyError::NotWitnessed { .. })
    ));
    let mut bad = a1.clone();
    bad.cosignatures[0].time += 1;
    bad.c2sp.clear();
    // A cosignature present must verify even where none is required (a
    // past checkpoint read by height).
    assert!(light.signed_from_answer(&bad).is_err());
    let mut past = a1.clone();
    past.cosignatures.clear();
    past.c2sp.clear();
    assert!(light.signed_from_answer(&past).is_ok());
    assert!(matches!(
        light.checkpoint_from_answer(&bad),
        Err(VerifyError::NotWitnessed { .. })
    ));
    let stripping = checkpoint_proxy(node.clone(), |a| {
        a.cosignatures.pop();
        a.c2sp.clear();
    });
    let (code, out) = output(&["verify", "--genesis", &gs, "--node", &stripping, "checkpoint"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("not witnessed") && out.contains("cosigned by 1 witnesses: genesis requires 2"),
        "{out}"
    );

    // A checker that is not govtune's verifies the note: q validators'
    // signatures, both cosignatures, and a consistency proof from the first
    // witnessed checkpoint to a later one; a changed root fails it.
    let (code, keys) = output(&["note-keys", "--genesis", &gs]);
    assert_eq!(code, 0, "{keys}");
    let validator_keys: Vec<String> = keys
        .lines()
        .filter_map(|l| l.strip_prefix("validator "))
        .filter_map(|l| l.split_once(' ').map(|(_, k)| k.to_string()))
        .collect();
    assert_eq!(validator_keys.len(), 4, "{keys}");
    let events: Vec<Digest> = (0..3)
        .map(|_| testnet::workload::submit(&op, &w.next_event(2, false).expect("event")).expect("submitted"))
        .collect();
    op.wait_committed(&events, Duration::from_secs(60))
        .expect("committed");
    let grown = op.health().expect("health").log_size;
    let (cp2, a2) = witnessed_above(
        &light,
        &node,
        cp1.checkpoint.height + 2,
        grown,
        Duration::from_secs(60),
    );
    assert!(
        cp2.checkpoint.size >= grown && grown > cp1.checkpoint.size,
        "the log grew between the two"
    );
    let proof = node
        .consistency_proof(cp1.checkpoint.size, cp2.checkpoint.size)
        .expect("consistency proof")
        .proof;
    let b64 = |d: &Digest| base64_of(&d.0);
    let note_path = dir.path().join("note.txt");
    let proof_path = dir.path().join("proof.txt");
    std::fs::write(&note_path, &a2.c2sp).expect("note");
    std::fs::write(
        &proof_path,
        proof.iter().map(|d| b64(d) + "\n").collect::<String>(),
    )
    .expect("proof");
    let mut args = vec![note_path.to_string_lossy().to_string()];
    for k in &validator_keys {
        args.extend(["--key".into(), k.clone()]);
    }
    args.extend(["--need".into(), "3".into()]);
    for k in &vkeys {
        args.extend(["--witness".into(), k.clone()]);
    }
    args.extend(["--witness-need".into(), "2".into()]);
    let mut with_proof = args.clone();
    with_proof.extend([
        "--old-size".into(),
        cp1.checkpoint.size.to_string(),
        "--old-root".into(),
        b64(&cp1.checkpoint.root),
        "--proof".into(),
        proof_path.to_string_lossy().to_string(),
    ]);
    let (code, out) = python_check(&with_proof);
    assert_eq!(code, 0, "the real note and proof check out: {out}");
    let mut changed = cp1.checkpoint.root;
    changed.0[0] ^= 1;
    let mut wrong_old = with_proof.clone();
    let at = wrong_old.iter().position(|a| a == "--old-root").expect("arg") + 1;
    wrong_old[at] = b64(&changed);
    let (code, out) = python_check(&wrong_old);
    assert_eq!(code, 1, "a changed earlier root fails the proof: {out}");
    let changed_note = a2.c2sp.replacen(&b64(&cp2.checkpoint.root), &b64(&changed), 1);
    std::fs::write(&note_path, changed_note).expect("note");
    let (code, out) = python_check(&with_proof);
    assert_eq!(code, 1, "a changed root in the note fails its signatures: {out}");

    // A forked log, signed by q validators' note keys: the witness refuses
    // it (same size, another root: 409; a larger size that does not extend
    // what it cosigned: 422), keeps it as evidence, and still refuses it
    // after a restart.
    let keyring = light.keyring();
    let evidence = |w: &Path| std::fs::read_dir(w.join("evidence")).map_or(0, |d| d.count());
    // Whether the witness kept `request` as evidence of a fork.
    let kept_fork = |w: &Path, request: &str| {
        std::fs::read_dir(w.join("evidence")).is_ok_and(|d| {
            d.flatten().any(|f| {
                f.file_name().to_string_lossy().starts_with("fork-")
                    && std::fs::read_to_string(f.path()).is_ok_and(|t| t.ends_with(request))
            })
        })
    };
    let forks = std::cell::Cell::new(0u8);
    // The size the witness holds (a submission from size 0 is answered 409
    // with it), read again before each forged request: the nodes keep
    // submitting the honest log meanwhile.
    let held = |port: u16| -> u64 {
        let (status, body) = add_checkpoint(port, &format!("old 0\n\n{}", a2.c2sp));
        assert_eq!(status, 409, "{body}");
        body.trim().parse().expect("a 409 names the size held")
    };
    let refuses_forks = |port: u16, wdir: &Path| -> u64 {
        let honest = node.checkpoint(None).expect("checkpoint").to_signed().checkpoint;
        let mut tries = 0;
        loop {
            tries += 1;
            assert!(tries < 20, "the witness's size kept moving");
            let h = held(port);
            forks.set(forks.get() + 1);
            let mut root = [0x5a; 32];
            root[0] = forks.get();
            let same = provenance::Checkpoint {
                size: h,
                root: Digest(root),
                ..honest.clone()
            };
            let request = provenance::note::witness_request(h, &[], &forged(&t, &same).to_c2sp(keyring, &[]));
            let (status, body) = add_checkpoint(port, &request);
            assert_eq!(status, 409, "{body}");
            if !kept_fork(wdir, &request) {
                continue; // the size moved: not yet the root conflict
            }
            let h = held(port);
            let longer = provenance::Checkpoint {
                size: h + 3,
                root: Digest([0xa5; 32]),
                ..honest.clone()
            };
            let proof = node
                .consistency_proof(h, h + 3)
                .map(|a| a.proof)
                .unwrap_or_default();
            let (status, body) = add_checkpoint(
                port,
                &provenance::note::witness_request(h, &proof, &forged(&t, &longer).to_c2sp(keyring, &[])),
            );
            match status {
                422 => return h,
                409 => continue, // the size moved under it
                s => panic!("a fork that does not extend the cosigned log: {s} {body}"),
            }
        }
    };
    let held_before = refuses_forks(ports[0], &wdir[0]);
    assert!(evidence(&wdir[0]) >= 2, "both forks are kept as evidence");
    drop(w1);
    w1 = witness_serve(&wdir[0], ports[0], &g);
    assert!(
        held(ports[0]) >= held_before,
        "the cosigned size survives the restart"
    );
    refuses_forks(ports[0], &wdir[0]);
    // A checkpoint signed by fewer than q validators is not cosigned.
    let honest = node.checkpoint(None).expect("checkpoint").to_signed();
    let mut two = forged(&t, &honest.checkpoint);
    two.validators.truncate(2);
    let (status, body) = add_checkpoint(
        ports[0],
        &provenance::note::witness_request(0, &[], &two.to_c2sp(keyring, &[])),
    );
    assert_eq!(status, 403, "{body}");

    // The honest log goes on being cosigned by the restarted witness.
    let (cp3, _) = witnessed_above(&light, &node, cp2.checkpoint.height, 0, Duration::from_secs(60));

    let verify_max_age = |seconds: u64| {
        output(&[
            "verify",
            "--genesis",
            &gs,
            "--node",
            node.base(),
            "--max-age",
            &seconds.to_string(),
            "checkpoint",
        ])
    };
    // One witness down: no new checkpoint has the quorum, so the node
    // keeps serving the last witnessed one, which grows stale; --max-age
    // says so, and one below twice the witnessing interval is refused.
    drop(w2);
    std::thread::sleep(Duration::from_secs(5));
    let (code, out) = verify_max_age(3);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("older than --max-age 3 s"), "{out}");
    let (code, out) = verify_max_age(1);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("cannot be met"), "{out}");
    w2 = witness_serve(&wdir[1], ports[1], &g);
    let (_, _) = witnessed_above(&light, &node, cp3.checkpoint.height, 0, Duration::from_secs(60));
    let (code, out) = verify_max_age(10);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("fresh: checkpoint at height"), "{out}");
    drop((w1, w2));
    t.down().expect("down");
}

fn base64_of(b: &[u8]) -> String {
    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, b)
}

/// What a light client of `node` checks with `args`, written to a bundle:
/// the run's exit code and output.
fn bundle_of(gs: &str, node: &str, path: &Path, args: &[&str]) -> (i32, String) {
    let p = path.to_string_lossy().to_string();
    let mut all = vec!["verify", "--genesis", gs, "--node", node, "--bundle", &p];
    all.extend_from_slice(args);
    output(&all)
}

/// Positions `count` of `0..len` from a seed (xorshift).
fn seeded_positions(seed: u64, len: usize, count: usize) -> Vec<usize> {
    let mut x = seed | 1;
    (0..count)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % len as u64) as usize
        })
        .collect()
}

/// What part of a bundle byte `i` is in: the answer's path, or the
/// header.
fn part_of(bytes: &[u8], i: usize) -> String {
    let b = lightclient::bundle::Bundle::decode(bytes).expect("a bundle");
    let mut at = lightclient::bundle::MAGIC.len() + 32 + 4;
    at += b.predicate.iter().map(|a| 4 + a.len()).sum::<usize>() + 4;
    for (name, v) in &b.inputs {
        at += 4 + name.len() + 8 + v.len();
        if i < at {
            return format!("input {name}");
        }
    }
    at += 4;
    for (path, r) in &b.answers {
        at += 4 + path.len() + 2 + 8 + r.body.len();
        if i < at {
            return format!("{path} ({} bytes)", r.body.len());
        }
    }
    "header".into()
}

/// Flips byte `i` of `bytes` (XOR 0x01: the smallest change, which keeps
/// a digit a digit) and checks the bundle in process: it must not pass.
fn flipped_fails(genesis: &Path, bytes: &[u8], i: usize) -> bool {
    let mut f = bytes.to_vec();
    f[i] ^= 0x01;
    !matches!(lightclient::cli::check_bundle(genesis, &f), Ok(true))
}

#[test]
fn a_bundle_verifies_offline_in_a_namespace_without_network_and_no_single_byte_flip_passes() {
    let dir = tempfile::tempdir().expect("tmp");
    let wdir = dir.path().join("w");
    let vkey = witness_init(&wdir, "w.witness.test/bundle");
    let port = free_port();
    let settings = NodeSettings {
        view_timeout_ms: Some(1500),
        heartbeat_ms: Some(300),
        witnesses: vec![(vkey, format!("http://127.0.0.1:{port}"))],
        witness_quorum: Some(1),
        witness_interval_ms: Some(1000),
        ..NodeSettings::default()
    };
    let mut t = Testnet::create(&dir.path().join("net"), 4, govtune(), &settings).expect("testnet");
    let g = t.genesis_path();
    let gs = g.to_string_lossy().to_string();
    let witness = witness_serve(&wdir, port, &g);
    t.start_all().expect("start");
    t.wait_all_healthy(Duration::from_secs(120)).expect("healthy");
    let light = LightClient::from_genesis_file(&g).expect("light client");
    let node = t.client(0);
    // A governed campaign of 4 steps, closed.
    let out = Command::new(govtune())
        .args(["campaign", "run", "--config"])
        .arg(campaign_file(dir.path(), 4))
        .arg("--testnet")
        .arg(dir.path().join("net"))
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let campaign = stdout
        .lines()
        .find_map(|l| l.strip_prefix("campaign ").filter(|d| d.len() == 64))
        .expect("campaign digest")
        .to_string();
    let size = t
        .client(t.by_role("operator").expect("operator"))
        .health()
        .expect("health")
        .log_size;
    t.wait_converged(size, Duration::from_secs(60))
        .expect("converged");
    let deadline = Instant::now() + Duration::from_secs(60);
    while light
        .latest_checkpoint(&node)
        .map_or(true, |cp| cp.checkpoint.size < size)
    {
        assert!(
            Instant::now() < deadline,
            "no witnessed checkpoint of the whole log"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // A small bundle (the checkpoint: its validators' and the consortium's
    // signatures and the witness's cosignature) and a large one (the
    // campaign's whole record, every entry with its proof).
    let small = dir.path().join("checkpoint.bundle");
    let (code, out) = bundle_of(&gs, node.base(), &small, &["checkpoint"]);
    assert_eq!(code, 0, "{out}");
    let large = dir.path().join("audits.bundle");
    let (code, out) = bundle_of(&gs, node.base(), &large, &["audits", "--campaign", &campaign]);
    assert_eq!(code, 0, "{out}");
    // A trace's bundle: the answer and everything its verification read.
    let traced = dir.path().join("trace.bundle");
    let (code, out) = output(&[
        "trace",
        "--node",
        node.base(),
        "--campaign",
        &campaign,
        "--output",
        "What light through yonder window breaks",
        "--genesis",
        &gs,
        "--bundle",
        &traced.to_string_lossy(),
    ]);
    assert_eq!(code, 0, "{out}");
    let small_bytes = std::fs::read(&small).expect("small");
    let large_bytes = std::fs::read(&large).expect("large");
    assert!(small_bytes.len() <= 8 * 1024, "{} bytes", small_bytes.len());
    assert!(
        large_bytes.len() > 8 * small_bytes.len(),
        "{} bytes",
        large_bytes.len()
    );

    // Offline: in a network namespace with only loopback, no node.
    drop(witness);
    t.down().expect("down");
    let lab = match testnet::netns::Lab::single("offline", &[]) {
        Ok(lab) => Some(lab),
        Err(e) if testnet::netns::may_skip() => {
            eprintln!("skipping the offline run in a network namespace: {e}");
            None
        }
        Err(e) => panic!("a network namespace (needs root and iproute2): {e}"),
    };
    for (b, predicate) in [(&small, "checkpoint"), (&large, "audits"), (&traced, "trace")] {
        let Some(lab) = &lab else { break };
        let o = lab
            .command("offline", govtune())
            .expect("command")
            .args(["verify", "--genesis", &gs, "--bundle"])
            .arg(b)
            .output()
            .expect("runs");
        let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(0), "{text}");
        assert!(text.contains(&format!("PASS {predicate}")), "{text}");
        // The bundle's predicate, named again, must be the same one.
        let o = lab
            .command("offline", govtune())
            .expect("command")
            .args(["verify", "--genesis", &gs, "--bundle"])
            .arg(b)
            .args(["consistency", "--first", "1"])
            .output()
            .expect("runs");
        assert_eq!(o.status.code(), Some(2));
    }
    // Checked in process too (what the flips use).
    assert!(matches!(
        lightclient::cli::check_bundle(&g, &small_bytes),
        Ok(true)
    ));
    assert!(matches!(
        lightclient::cli::check_bundle(&g, &large_bytes),
        Ok(true)
    ));

    // Every single-byte flip of the small bundle, and 1,000 seeded ones of
    // the large, fails.
    let started = Instant::now();
    let passed: Vec<usize> = (0..small_bytes.len())
        .filter(|&i| !flipped_fails(&g, &small_bytes, i))
        .collect();
    let parts: std::collections::BTreeSet<String> =
        passed.iter().map(|&i| part_of(&small_bytes, i)).collect();
    assert!(
        passed.is_empty(),
        "{} flips of the small bundle still pass, in {parts:?}",
        passed.len()
    );
    let small_time = started.elapsed();
    let started = Instant::now();
    let passed: Vec<usize> = seeded_positions(0x6f76_7465_6e65_7473, large_bytes.len(), 1000)
        .into_iter()
        .filter(|&i| !flipped_fails(&g, &large_bytes, i))
        .collect();
    let parts: std::collections::BTreeSet<String> =
        passed.iter().map(|&i| part_of(&large_bytes, i)).collect();
    assert!(
        passed.is_empty(),
        "{} flips of the large bundle still pass, in {parts:?}",
        passed.len()
    );
    eprintln!(
        "flips: {} of a {}-byte bundle in {:.1} s; 1000 of a {}-byte bundle in {:.1} s",
        small_bytes.len(),
        small_bytes.len(),
        small_time.as_secs_f64(),
        large_bytes.len(),
        started.elapsed().as_secs_f64()
    );
}
