//! Issue 7's must-shows against a 4-process testnet: a governed campaign
//! runs through the operator's node, then
//!
//! * a trace asked of a node that is *not* the operator's verifies with the
//!   genesis file alone (and its scores recompute bit for bit), while an
//!   answer with a changed event, proof, checkpoint or citation fails;
//! * each predicate passes on the honest record and fails on a real
//!   violation: a policy that is not the approved one, a weights file with
//!   one flipped bit, a source's data committed after its revocation (a
//!   data-source node co-signed before the revocation, governance was
//!   paused until after it; the consortium colludes, test-only, so that
//!   consensus lets it in), and a node that hides one campaign record;
//! * the revocation audit lists exactly the events that used the revoked
//!   source (checked against a scan of the whole log);
//! * a node that lies with valid proofs (a proxy rewriting an honest
//!   node's answers) is caught, each rewrite by its own binary run that
//!   exits 1 naming it: every printed field of a trace answer under
//!   `--recompute`, an answer for another output, an entry or the
//!   revocation left out of a source's listing (`--scan`), a truncated
//!   campaign, a split view forged with q validators' key shares (against
//!   a second node and against `--state`); an older checkpoint consistent
//!   with the state exits 2.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use lightclient::verify::Verifier;
use provenance::api::{CheckpointAnswer, ListingAnswer, ListingQuery, TraceAnswer, TraceRequest};
use provenance::{Digest, EntryBody, Timestamp};
use testnet::workload::{now_ms, submit, Workload};
use testnet::{Client, NodeSettings, Testnet};

const MACBETH: &[u8] = include_bytes!("../../../testnet/fixtures/macbeth.txt");
const TWELFTH_NIGHT: &[u8] = include_bytes!("../../../testnet/fixtures/twelfth_night.txt");

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data")
}

/// The demo campaign cut to `steps` steps, with the repository's data.
fn campaign_file(dir: &Path, steps: u64) -> PathBuf {
    testnet::campaign::short_campaign(&data_dir(), dir, steps, |t| {
        t.replace("checkpoint_every = 50", "checkpoint_every = 3")
    })
    .expect("campaign file")
}

/// A node that hides one log entry from campaign listings: a proxy in front
/// of a real node.
fn hiding_proxy(upstream: Client, hide: u64) -> String {
    listing_proxy(upstream, "/v1/campaigns/", move |l| {
        l.entries.retain(|e| e.index != hide)
    })
}

/// A node that forges its checkpoints: every checkpoint it serves (alone, in
/// a listing, a status or a trace answer) names another root under the
/// consortium's signature.
fn forging_proxy(upstream: Client) -> String {
    fn forge(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                if m.contains_key("signature") {
                    if let Some(root) = m.get_mut("root") {
                        *root = serde_json::Value::String(Digest([7; 32]).to_hex());
                    }
                }
                if let Some(serde_json::Value::Object(c)) = m.get_mut("checkpoint") {
                    if let Some(root) = c.get_mut("root") {
                        *root = serde_json::Value::String(Digest([7; 32]).to_hex());
                    }
                }
                m.values_mut().for_each(forge);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(forge),
            _ => {}
        }
    }
    rewriting_proxy(upstream, |_, b| {
        match serde_json::from_slice::<serde_json::Value>(&b) {
            Ok(mut v) => {
                forge(&mut v);
                serde_json::to_vec(&v).expect("json")
            }
            Err(_) => b,
        }
    })
}

/// A proxy in front of a real node that passes GETs and `POST /v1/trace`
/// through `rewrite(path, body)`.
fn rewriting_proxy(upstream: Client, rewrite: impl Fn(&str, Vec<u8>) -> Vec<u8> + Send + 'static) -> String {
    serve_proxy(upstream, |q| q, rewrite)
}

/// A proxy whose listings under `prefix` (`/v1/sources/` or
/// `/v1/campaigns/`, `.../entries`) are changed by `change`, their proofs
/// left as the node made them.
fn listing_proxy(
    upstream: Client,
    prefix: &'static str,
    change: impl Fn(&mut ListingAnswer) + Send + 'static,
) -> String {
    rewriting_proxy(upstream, move |path, b| {
        if path.starts_with(prefix) && path.ends_with("/entries") {
            let mut l: ListingAnswer = serde_json::from_slice(&b).expect("a listing");
            change(&mut l);
            serde_json::to_vec(&l).expect("json")
        } else {
            b
        }
    })
}

/// A proxy that asks the node `ask(question)` instead of the question it
/// was sent, and passes the answer on unchanged.
fn proxy_asking(upstream: Client, ask: impl Fn(TraceRequest) -> TraceRequest + Send + 'static) -> String {
    serve_proxy(upstream, ask, |_, b| b)
}

fn serve_proxy(
    upstream: Client,
    ask: impl Fn(TraceRequest) -> TraceRequest + Send + 'static,
    rewrite: impl Fn(&str, Vec<u8>) -> Vec<u8> + Send + 'static,
) -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    let upstream = upstream.with_timeout(Duration::from_secs(600));
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut r = BufReader::new(conn.try_clone().expect("clone"));
            let mut line = String::new();
            if r.read_line(&mut line).is_err() {
                continue;
            }
            let mut length = 0usize;
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
            }
            let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
            let answer = if line.starts_with("POST") {
                let mut body = vec![0; length];
                if r.read_exact(&mut body).is_err() {
                    continue;
                }
                serde_json::from_slice::<TraceRequest>(&body)
                    .map_err(|e| e.to_string())
                    .and_then(|req| {
                        upstream
                            .post_json::<_, TraceAnswer>(&path, &ask(req))
                            .map_err(|e| e.to_string())
                    })
                    .map(|a| serde_json::to_vec(&a).expect("json"))
            } else {
                upstream.get_bytes(&path).map_err(|e| e.to_string())
            };
            let (status, body) = match answer {
                Ok(b) => (200, rewrite(&path, b)),
                Err(e) => (404, format!("{{\"error\":{e:?}}}").into_bytes()),
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

/// [`exits`] for a command line whose arguments hold no spaces.
fn exits_line(code: i32, line: &str) -> String {
    exits(code, &line.split(' ').collect::<Vec<_>>())
}

/// Runs `govtune ARGS` and, for the light client's commands, the
/// light-client binary `govtune-verify ARGS` too (the same code: its exit
/// status is shown for both); both must exit `code`.
/// Returns govtune's standard output.
fn exits(code: i32, args: &[&str]) -> String {
    let govtune = Path::new(env!("CARGO_BIN_EXE_govtune"));
    let mut bins = vec![govtune.to_path_buf()];
    // `verify model` and `--recompute` need the tuner, which `govtune-verify` leaves out
    // unless built with the `recompute` feature: govtune alone checks it.
    if matches!(args.first(), Some(&"verify" | &"trace" | &"audit"))
        && !args.contains(&"model")
        && !args.contains(&"--recompute")
    {
        let light = govtune.with_file_name("govtune-verify");
        assert!(
            light.is_file(),
            "{} is built with the workspace (cargo nextest run --workspace)",
            light.display()
        );
        bins.push(light);
    }
    let mut stdout = String::new();
    for (k, bin) in bins.iter().enumerate() {
        let out = Command::new(bin).args(args).output().expect("runs");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert_eq!(
            out.status.code(),
            Some(code),
            "{} {}\n{text}{}",
            bin.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        if k == 0 {
            stdout = text;
        }
    }
    stdout
}

fn window_text(title: &str, index: u64) -> Vec<u8> {
    let mut text = std::fs::read(data_dir().join(format!("plays/sources/{title}.txt"))).expect("source text");
    text.truncate(24576);
    let i = index as usize * 65;
    text[i..i + 65].to_vec()
}

#[test]
fn traces_verify_predicates_catch_violations_and_the_audit_is_exact() {
    let dir = tempfile::tempdir().expect("tmp");
    let bin = Path::new(env!("CARGO_BIN_EXE_govtune"));
    // The whole consortium colludes (test-only), so that a step using a
    // source after its revocation can still reach the log for the
    // verifier to catch: with the state rules on, consensus refuses it
    // (`node/cli/tests/network.rs` shows that).
    let settings = NodeSettings {
        view_timeout_ms: Some(1500),
        heartbeat_ms: Some(300),
        max_block_entries: None,
        collude: ["globe-press", "folio-society", "standards-board", "tuning-lab"]
            .map(String::from)
            .to_vec(),
        ..NodeSettings::default()
    };
    let net = dir.path().join("net");
    let mut t = Testnet::create(&net, 4, bin, &settings).expect("testnet");
    t.start_all().expect("start");
    t.wait_all_healthy(Duration::from_secs(120)).expect("healthy");
    let genesis = t.genesis_path();

    // A governed campaign of 6 steps through the operator's node.
    let config = campaign_file(dir.path(), 6);
    let model = dir.path().join("model.safetensors");
    let out = Command::new(bin)
        .args(["campaign", "run", "--config"])
        .arg(&config)
        .arg("--testnet")
        .arg(&net)
        .arg("--model-out")
        .arg(&model)
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
        .and_then(|d| Digest::from_hex(d).ok())
        .expect("campaign digest");
    t.wait_converged(17, Duration::from_secs(60)).expect("converged");
    // Checkpoints trail the log by a block: wait until the close is certified.
    let reader = t.client(0);
    for _ in 0..200 {
        let cp = reader.checkpoint(None).expect("checkpoint");
        if cp.size >= 17 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    // The campaign's record, verified from a data-source node.
    let ds = t.by_role("data-source").expect("ds");
    let mut v = Verifier::new(&genesis, t.client(ds)).expect("verifier");
    let vc = v.campaign(&campaign).expect("campaign record verifies");
    let record = vc.record.clone().expect("closed");
    assert_eq!(record.chain.len(), 6);
    let policy = vc.campaign.policy;

    // --- Trace on a node that is not the operator's: every window of the
    // last event (scored against the states nearest the final model; the
    // first steps' query gradients are degenerate, B = 0). The data order is
    // drawn from the consortium's signature, so it differs from run to run:
    // one window traces to its own source first about 70% of the time and
    // sits among that source's top examples about 90% (measured over 288
    // windows in three runs), so the test asks for rates well above chance
    // (1 in 8 sources; 3 of about 12 examples) with margins that hold for
    // any draw, not for one lucky window.
    let last = match record.chain.last() {
        Some(EntryBody::Composite(e)) => e.records.clone(),
        other => panic!("expected a composite event, got {:?}", other.map(|b| b.kind())),
    };
    assert_eq!(last.len(), 16);
    let mut traced = Vec::new();
    for r in &last {
        let (_, manifest) = v.ensure(&vc.checkpoint, &r.source).expect("manifest");
        let title = match manifest.body {
            EntryBody::Manifest(m) => m.title,
            _ => panic!("not a manifest"),
        };
        let text = window_text(&title, r.index);
        let (prompt, output) = text.split_at(32);
        let a = lightclient::cli::ask_trace(
            &t.client(ds),
            &campaign,
            std::str::from_utf8(prompt).expect("utf8"),
            std::str::from_utf8(output).expect("utf8"),
            None,
        )
        .expect("trace answer");
        assert_eq!(a.examples_scored, 96);
        assert_eq!(a.sources.len(), 8);
        assert!(a
            .sources
            .iter()
            .all(|s| s.top_examples.iter().all(|x| x.score.is_finite())));
        traced.push((r.source, r.index, title, a));
    }
    let first = traced
        .iter()
        .filter(|(src, _, _, a)| a.sources[0].source == *src)
        .count();
    let own = traced
        .iter()
        .filter(|(src, idx, _, a)| {
            a.sources
                .iter()
                .any(|s| s.source == *src && s.top_examples.iter().any(|x| x.index == *idx))
        })
        .count();
    let render = || {
        traced
            .iter()
            .map(|(_, idx, title, a)| format!("{title} #{idx}:\n{}", lightclient::cli::render_trace(a)))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        first >= 5,
        "{first} of 16 trained windows trace to their own source first:\n{}",
        render()
    );
    assert!(
        own >= 10,
        "{own} of 16 trained windows are among their source's top examples:\n{}",
        render()
    );
    // The rest of the test works on one answer: a window that traced to
    // its own source first.
    let (src, idx, title, a) = traced
        .into_iter()
        .find(|(src, _, _, a)| a.sources[0].source == *src)
        .expect("a window traced to its own source");
    let text = window_text(&title, idx);
    let (prompt, output) = text.split_at(32);
    let mut v = Verifier::new(&genesis, t.client(ds)).expect("verifier");
    let verdict = v.trace(&a, true).expect("verifies");
    assert!(verdict.pass, "{}", verdict.render());
    assert!(
        verdict.notes.iter().any(|n| n.contains("bit-identical")),
        "{}",
        verdict.render()
    );

    // --- The exit-code contract through the binaries: 0 holds, 1 violated,
    // 2 could not check (a forged checkpoint, an unreachable node).
    let g = genesis.to_str().expect("utf8").to_string();
    let api = t.nodes[ds].api.clone();
    let c = campaign.to_hex();
    let policy_hex = vc.campaign.policy.to_hex();
    let src_hex = src.to_hex();
    let (p_text, o_text) = (
        std::str::from_utf8(prompt).expect("utf8"),
        std::str::from_utf8(output).expect("utf8"),
    );
    // A verifier that keeps state holds this checkpoint; a proxy that keeps
    // serving it later serves a stale one.
    let state = dir.path().join("verifier-state");
    let st = state.to_str().expect("utf8").to_string();
    exits_line(
        0,
        &format!("verify --state {st} --genesis {g} --node {api} checkpoint"),
    );
    let early = t.client(ds).get_bytes("/v1/checkpoint").expect("checkpoint");
    let stale = rewriting_proxy(t.client(ds), move |path, b| {
        if path == "/v1/checkpoint" {
            early.clone()
        } else {
            b
        }
    });
    // Shared flags go before or after the predicate.
    exits(0, &["verify", "checkpoint", "--genesis", &g, "--node", &api]);
    exits_line(
        0,
        &format!("verify --genesis {g} policy --campaign {c} --approved {policy_hex} --node {api}"),
    );
    let answer_file = dir.path().join("answer.json");
    let af = answer_file.to_str().expect("utf8").to_string();
    // `trace` of the window through `node`, answer verified with the genesis
    // file, expected to exit `code`.
    let trace_via = |code: i32, node: &str, extra: &[&str]| {
        let mut args = vec![
            "trace",
            "--node",
            node,
            "--campaign",
            &c,
            "--prompt",
            p_text,
            "--output",
            o_text,
            "--genesis",
            &g,
        ];
        args.extend_from_slice(extra);
        exits(code, &args)
    };
    trace_via(0, &api, &["--out", &af]);
    exits_line(
        0,
        &format!("verify --genesis {g} --node {api} trace --answer {af}"),
    );
    let mut changed: TraceAnswer =
        serde_json::from_str(&std::fs::read_to_string(&answer_file).expect("answer")).expect("json");
    let mut leaf = hex::decode(&changed.events[0].entry.leaf).expect("hex");
    let n = leaf.len();
    leaf[n - 9] ^= 1;
    changed.events[0].entry.leaf = hex::encode(leaf);
    let changed_file = dir.path().join("changed.json");
    std::fs::write(&changed_file, serde_json::to_string(&changed).expect("json")).expect("write");
    let cf = changed_file.to_str().expect("utf8");
    let out = exits_line(
        1,
        &format!("verify --genesis {g} --node {api} trace --answer {cf}"),
    );
    assert!(out.contains("FAIL"), "the evidence is printed: {out}");
    let forger = forging_proxy(t.client(ds));
    for line in [
        format!("verify --genesis {g} --node {forger} checkpoint"),
        format!("verify --genesis {g} --node {forger} policy --campaign {c} --approved {policy_hex}"),
        format!("verify --genesis {g} --node {forger} source --id {src_hex}"),
        format!("audit revocation --genesis {g} --node {forger} --source {src_hex}"),
    ] {
        exits_line(2, &line);
    }
    trace_via(2, &forger, &[]);
    let out = exits_line(
        2,
        &format!("verify --json --genesis {g} --node {forger} checkpoint"),
    );
    let failure: serde_json::Value = serde_json::from_str(&out).expect("--json on a failure prints JSON");
    assert_eq!(
        (failure["pass"].as_bool(), failure["checked"].as_bool()),
        (Some(false), Some(false)),
        "{out}"
    );
    exits_line(
        2,
        &format!("verify --genesis {g} --node 127.0.0.1:1 policy --campaign {c} --approved {policy_hex}"),
    );

    // Changed answers fail.
    let fails = |a: &TraceAnswer| -> bool {
        let mut v = Verifier::new(&genesis, t.client(ds)).expect("verifier");
        match v.trace(a, false) {
            Ok(verdict) => !verdict.pass,
            Err(_) => true,
        }
    };
    let mut bad = a.clone();
    let mut leaf = hex::decode(&bad.events[0].entry.leaf).expect("hex");
    let n = leaf.len();
    leaf[n - 9] ^= 1;
    bad.events[0].entry.leaf = hex::encode(leaf);
    assert!(fails(&bad), "a changed event must fail");
    let mut bad = a.clone();
    bad.events[0].entry.proof[0].0[0] ^= 1;
    assert!(fails(&bad), "a changed proof must fail");
    let mut bad = a.clone();
    bad.checkpoint.root = Digest([9; 32]);
    assert!(fails(&bad), "a changed checkpoint must fail");
    let mut bad = a.clone();
    bad.sources[0].top_examples[0].index += 1000;
    assert!(fails(&bad), "an example that is not in its event must fail");
    let mut bad = a.clone();
    bad.report_digest = Digest([1; 32]);
    let mut v = Verifier::new(&genesis, t.client(ds)).expect("verifier");
    assert!(
        !v.trace(&bad, true).expect("checks").pass,
        "changed scores fail --recompute"
    );

    // --- `--recompute` checks every field the answer shows: the scores are
    // recomputed once here, each rewrite of an honest answer (its proofs all
    // still valid) is named.
    let report = {
        let node = t.client(ds);
        let mut fetch = |d: &Digest| -> tuner::Result<Vec<u8>> {
            node.get_bytes(&format!("/v1/blobs/{}", d.to_hex()))
                .map_err(|e| tuner::TunerError::Sink(e.to_string()))
        };
        let prep = tuner::record::PreparedTrace::build(&record, &mut fetch).expect("prepared");
        let method = tuner::score::Method::by_name(&a.method).expect("method");
        prep.trace(prompt, output, method).expect("report")
    };
    assert_eq!(report.digest(), a.report_digest);
    assert!(lightclient::recompute::differences(&report, &a).is_empty());
    type Rewrite = Box<dyn Fn(&mut TraceAnswer)>;
    let rewrites: Vec<(&str, Rewrite)> = vec![
        ("score", Box::new(|a| a.sources[0].score += 1.0)),
        ("salient", Box::new(|a| a.sources[0].salient += 0.25)),
        ("rank", Box::new(|a| a.sources[1].rank = 1)),
        (
            "top examples",
            Box::new(|a| a.sources[0].top_examples[0].score += 0.5),
        ),
        ("top examples", Box::new(|a| a.sources[0].top_examples.reverse())),
        ("event", Box::new(|a| a.events[0].score += 1.0)),
        ("event", Box::new(|a| a.events[0].examples += 1)),
        ("parameter blocks", Box::new(|a| a.blocks[0].share = 0.99)),
        ("examples_scored", Box::new(|a| a.examples_scored += 10)),
        ("is source", Box::new(|a| a.sources.swap(0, 1))),
    ];
    for (k, (field, rewrite)) in rewrites.iter().enumerate() {
        let mut changed = a.clone();
        rewrite(&mut changed);
        let found = lightclient::recompute::differences(&report, &changed);
        assert!(
            found.iter().any(|d| d.contains(field)),
            "a rewritten {field} must be named: {found:?}"
        );
        // And through the binary: exit 1, the field named.
        let changed_file = dir.path().join(format!("rewrite-{k}.json"));
        std::fs::write(&changed_file, serde_json::to_string(&changed).expect("json")).expect("write");
        let out = exits_line(
            1,
            &format!(
                "verify --genesis {g} --node {api} trace --recompute --answer {}",
                changed_file.display()
            ),
        );
        assert!(out.contains(field), "a rewritten {field} is named: {out}");
    }

    // An answer for another output than the one asked: the proxy asks the
    // node about another output and passes its honest, proved answer on.
    let other = std::str::from_utf8(&window_text(&title, idx + 1)[32..])
        .expect("utf8")
        .to_string();
    let swapper = proxy_asking(t.client(ds), move |mut q| {
        q.output = other.clone();
        q
    });
    let out = trace_via(1, &swapper, &[]);
    assert!(out.contains("the answer is for output"), "{out}");

    // --- Policy: passes for the approved policy; a successor governance
    // publishes later is not what this campaign ran under.
    let mut v = Verifier::new(&genesis, t.client(ds)).expect("verifier");
    let ok = v.policy(&campaign, &policy).expect("policy verdict");
    assert!(ok.pass, "{}", ok.render());
    let gov = t.by_role("governance").expect("gov");
    let mut p2 = match v.ensure(&vc.checkpoint, &policy).expect("policy").1.body {
        EntryBody::Policy(p) => p,
        _ => panic!("not a policy"),
    };
    p2.supersedes = Some(policy);
    p2.policy_version += 1;
    let p2d = t
        .admin(gov)
        .expect("admin")
        .submit("/v1/policies", &p2)
        .expect("policy 2")
        .digest;
    reader
        .wait_committed(&[p2d], Duration::from_secs(60))
        .expect("committed");
    std::thread::sleep(Duration::from_secs(2));
    let mut v = Verifier::new(&genesis, t.client(ds)).expect("verifier");
    let bad = v.policy(&campaign, &p2d).expect("policy verdict");
    assert!(!bad.pass, "steps under an unapproved policy: {}", bad.render());
    let mut v = Verifier::new(&genesis, t.client(ds)).expect("verifier");
    assert!(v.policy(&campaign, &policy).expect("verdict").pass);
    let p2_hex = p2d.to_hex();
    let out = exits_line(
        1,
        &format!("verify --genesis {g} --node {api} --json policy --campaign {c} --approved {p2_hex}"),
    );
    let verdict: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(verdict["pass"].as_bool(), Some(false), "{out}");
    exits_line(
        0,
        &format!("verify --genesis {g} --node {api} policy --campaign {c} --approved {policy_hex}"),
    );

    // --- Model: the campaign's own weights pass, one flipped bit fails.
    let weights = std::fs::read(&model).expect("model file");
    let mut v = Verifier::new(&genesis, t.client(ds)).expect("verifier");
    let ok = v.model(&campaign, &weights).expect("model verdict");
    assert!(ok.pass, "{}", ok.render());
    let mut flipped = weights.clone();
    let k = flipped.len() - 100;
    flipped[k] ^= 0x04;
    let mut v = Verifier::new(&genesis, t.client(ds)).expect("verifier");
    assert!(!v.model(&campaign, &flipped).expect("model verdict").pass);
    let flipped_file = dir.path().join("flipped.safetensors");
    std::fs::write(&flipped_file, &flipped).expect("write");
    let m = model.to_str().expect("utf8");
    exits_line(
        0,
        &format!("verify --genesis {g} --node {api} model --campaign {c} --weights {m}"),
    );
    exits_line(
        1,
        &format!(
            "verify --genesis {g} --node {api} model --campaign {c} --weights {}",
            flipped_file.display()
        ),
    );

    // --- A node that hides one record is caught: the checkpoint's index
    // names the entry left out.
    let hidden = vc.chain_index[3];
    let proxy = hiding_proxy(t.client(ds), hidden);
    let mut v = Verifier::new(&genesis, Client::new(&proxy)).expect("verifier");
    match v.policy(&campaign, &policy) {
        Err(testnet::VerifyError::BadProof(m)) if m.contains(&format!("omits entry {hidden}")) => {}
        other => panic!("a hidden record must be caught, got {other:?}"),
    }

    // --- Source: the campaign's sources pass.
    let mut v = Verifier::new(&genesis, t.client(ds)).expect("verifier");
    let ok = v.source(&src, true).expect("source verdict");
    assert!(ok.pass, "{}", ok.render());

    // --- A use after revocation: a second, signed workload whose event was
    // co-signed by the data-source node before the revocation and by
    // governance (paused meanwhile) after it, so it commits after.
    let mut w =
        Workload::new(&t, &[("macbeth", MACBETH), ("twelfth-night", TWELFTH_NIGHT)]).expect("workload");
    w.register(&t).expect("register");
    let op = t.admin(t.by_role("operator").expect("op")).expect("admin");
    let e1 = submit(&op, &w.next_event(2, false).expect("event")).expect("submit");
    reader.wait_committed(&[e1], Duration::from_secs(60)).expect("e1");
    t.pause(gov).expect("pause governance");
    let e2 = submit(&op, &w.next_event(2, false).expect("event")).expect("submit");
    std::thread::sleep(Duration::from_secs(3));
    let revoked = w.sources[0].manifest.source_id();
    let rev = provenance::Revocation {
        version: 1,
        authority: w.sources[0].manifest.authority.clone(),
        source: revoked,
        reason: "the rights-holder withdrew consent".into(),
        requested: Timestamp(now_ms()),
    };
    let ra = t
        .admin(w.sources[0].node)
        .expect("admin")
        .submit("/v1/revocations", &rev)
        .expect("revocation");
    let rd = ra.digest;
    reader
        .wait_committed(&[rd], Duration::from_secs(60))
        .expect("revocation committed");
    t.resume(gov).expect("resume");
    reader
        .wait_committed(&[e2], Duration::from_secs(90))
        .expect("e2 commits after the revocation");
    let index_of = |d: &Digest| {
        reader
            .status(d)
            .expect("status")
            .state
            .committed()
            .expect("committed")
            .index
    };
    let ri = index_of(&rd);
    let e2i = index_of(&e2);
    assert!(e2i > ri, "the event committed after the revocation");
    for _ in 0..200 {
        let cp = reader.checkpoint(None).expect("checkpoint");
        if cp.size > e2i {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut v = Verifier::new(&genesis, t.client(ds)).expect("verifier");
    let bad = v.source(&revoked, false).expect("source verdict");
    assert!(!bad.pass, "{}", bad.render());
    assert!(
        bad.violations.iter().any(|x| x.contains("after the revocation")),
        "{}",
        bad.render()
    );
    let revoked_hex = revoked.to_hex();
    exits_line(
        1,
        &format!("verify --genesis {g} --node {api} source --id {revoked_hex}"),
    );
    exits_line(
        1,
        &format!("audit revocation --genesis {g} --node {api} --source {revoked_hex}"),
    );
    exits_line(
        0,
        &format!("verify --genesis {g} --node {api} source --id {src_hex}"),
    );

    // A node that leaves the revocation out of the source's listing: the
    // checkpoint's index shows the listing incomplete and names the entry
    // left out, with no --scan (and with it: the index check comes first).
    let omitter = listing_proxy(t.client(ds), "/v1/sources/", move |l| {
        l.entries.retain(|e| e.index != ri)
    });
    for scan in ["", "--scan "] {
        let out = exits_line(
            1,
            &format!("audit revocation {scan}--genesis {g} --node {omitter} --source {revoked_hex}"),
        );
        assert!(out.contains(&format!("omits entry {ri}")), "{out}");
        let out = exits_line(
            1,
            &format!("verify --genesis {g} --node {omitter} source {scan}--id {revoked_hex}"),
        );
        assert!(out.contains(&format!("omits entry {ri}")), "{out}");
    }
    // A node that truncates a campaign's listing before its close: the
    // index shows the campaign's list longer (the audit fetches whole
    // campaigns).
    let truncator = listing_proxy(t.client(ds), "/v1/campaigns/", |l| {
        l.entries.pop();
    });
    let out = exits_line(
        1,
        &format!("audit revocation --genesis {g} --node {truncator} --source {src_hex}"),
    );
    assert!(out.contains("omits entry"), "{out}");
    // A node that leaves one of the source's events out of its listing:
    // caught by the index alone, and by the scan.
    let used = vc.chain_index[record
        .chain
        .iter()
        .position(|b| b.sources_named().contains(&src))
        .expect("an event uses the source")];
    let dropper = listing_proxy(t.client(ds), "/v1/sources/", move |l| {
        l.entries.retain(|e| e.index != used)
    });
    for scan in ["", "--scan "] {
        let out = exits_line(
            1,
            &format!("verify --genesis {g} --node {dropper} source {scan}--id {src_hex}"),
        );
        assert!(out.contains(&format!("omits entry {used}")), "{out}");
    }
    // A node that claims the source was never named, with a valid proof:
    // the index's proof of absence of a source that is not registered,
    // under the same checkpoint. It proves nothing of this source.
    let upstream = t.client(ds);
    let denier = listing_proxy(t.client(ds), "/v1/sources/", move |l| {
        let absent = Digest([0xee; 32]).to_hex();
        let q = ListingQuery {
            after: None,
            height: Some(l.checkpoint.height),
        };
        let other: ListingAnswer = upstream
            .get_json(&format!("/v1/sources/{absent}/entries?{}", q.to_query()))
            .expect("the absent source's listing");
        assert!(other.entries.is_empty());
        *l = other;
    });
    let out = exits_line(
        1,
        &format!("verify --genesis {g} --node {denier} source --id {src_hex}"),
    );
    assert!(out.contains("index proof"), "{out}");
    // The same proof is a true answer for the source never registered.
    let absent_hex = Digest([0xee; 32]).to_hex();
    let out = exits_line(
        0,
        &format!("verify --genesis {g} --node {api} source --id {absent_hex}"),
    );
    assert!(out.contains("proves it absent"), "{out}");
    // A listing stripped of its index proof is refused.
    let stripper = listing_proxy(t.client(ds), "/v1/sources/", |l| l.index = None);
    let out = exits_line(
        1,
        &format!("verify --genesis {g} --node {stripper} source --id {src_hex}"),
    );
    assert!(out.contains("no proof from the checkpoint's index"), "{out}");

    // --- The revocation audit lists exactly the events that used it.
    let mut v = Verifier::new(&genesis, t.client(ds)).expect("verifier");
    let audit = v.revocation_audit(&revoked).expect("audit");
    let cp = v.light().latest_checkpoint(v.node()).expect("checkpoint");
    let all = v.scan(&cp).expect("scan");
    let want: BTreeSet<u64> = all
        .iter()
        .filter(|(_, e)| match &e.body {
            EntryBody::Step(s) => s.examples.iter().any(|r| r.source == revoked),
            EntryBody::Composite(c) => c.records.iter().any(|r| r.source == revoked),
            _ => false,
        })
        .map(|(i, _)| *i)
        .collect();
    let got: BTreeSet<u64> = audit.steps.iter().map(|s| s.index).collect();
    assert_eq!(got, want, "{}", audit.render());
    assert_eq!(got.len(), 2);
    assert!(audit.steps.iter().any(|s| s.after_revocation && s.index == e2i));
    assert!(audit.revoked.is_some());

    // The tuner campaign's source: revoke it and audit.
    let ra = t
        .admin(ds_of(&t, &v, &src))
        .expect("admin")
        .submit(
            "/v1/revocations",
            &provenance::Revocation {
                version: 1,
                authority: provenance::AuthorityId::new(manifest_authority(&mut v, &src)).expect("id"),
                source: src,
                reason: "licence ended".into(),
                requested: Timestamp(now_ms()),
            },
        )
        .expect("revocation");
    let rd = ra.digest;
    reader
        .wait_committed(&[rd], Duration::from_secs(60))
        .expect("committed");
    std::thread::sleep(Duration::from_secs(2));
    let mut v = Verifier::new(&genesis, t.client(ds)).expect("verifier");
    let audit = v.revocation_audit(&src).expect("audit");
    let want: BTreeSet<u64> = record
        .chain
        .iter()
        .enumerate()
        .filter(|(_, b)| match b {
            EntryBody::Composite(c) => c.records.iter().any(|r| r.source == src),
            _ => false,
        })
        .map(|(k, _)| vc.chain_index[k])
        .collect();
    let got: BTreeSet<u64> = audit.steps.iter().map(|s| s.index).collect();
    assert_eq!(got, want, "{}", audit.render());
    assert!(audit.steps.iter().all(|s| !s.after_revocation));
    exits_line(
        0,
        &format!("audit revocation --genesis {g} --node {api} --source {src_hex}"),
    );
    let share = audit.campaigns[0].share_of_examples;
    assert!(share > 0.0 && share < 1.0, "{}", audit.render());
    // --state: a later run on the grown log extends the held checkpoint (a
    // consistency proof from the node); the stale proxy's old checkpoint is
    // refused with 2, naming the checkpoint held.
    exits_line(
        0,
        &format!(
            "verify --state {st} --genesis {g} --node {api} policy --campaign {c} --approved {policy_hex}"
        ),
    );
    let out = exits_line(
        2,
        &format!("verify --json --state {st} --genesis {g} --node {stale} checkpoint"),
    );
    assert!(out.contains("older than the one held"), "{out}");

    // Checkpoints carry the consortium's time: a live node's is current.
    exits_line(
        0,
        &format!("verify --max-age 60 --genesis {g} --node {api} checkpoint"),
    );

    // --- A split view: q validators' key shares (what more than f
    // colluding members hold) certify another root for the log's current
    // size, and a proxy in front of another node serves it as that node's
    // latest checkpoint.
    let honest = reader.checkpoint(None).expect("checkpoint");
    let fake_root = Digest([0x5a; 32]);
    let forged = consortium_signed(
        &t,
        provenance::Checkpoint {
            version: <provenance::Checkpoint as provenance::Canonical>::VERSION,
            origin: honest.origin.clone(),
            size: honest.size,
            root: fake_root,
            height: honest.height,
            time: honest.time,
            index: honest.index,
        },
    );
    let forged_answer =
        serde_json::to_vec(&CheckpointAnswer::new(&forged, Vec::new(), String::new())).expect("json");
    let other = t.by_role("operator").expect("op");
    let splitter = rewriting_proxy(t.client(other), move |path, b| {
        if path == "/v1/checkpoint" {
            forged_answer.clone()
        } else {
            b
        }
    });
    // Asked together, the honest node and the split one: both signed
    // checkpoints are printed, each with the node that served it.
    let out = exits_line(
        1,
        &format!("verify --genesis {g} --node {api} --node {splitter} checkpoint"),
    );
    assert!(out.contains("split view"), "{out}");
    assert!(
        out.contains(&honest.root.to_string()) && out.contains(&fake_root.to_string()),
        "both roots are printed: {out}"
    );
    // The split node alone, to a verifier whose state holds the honest
    // checkpoint of that size: inconsistent with the state.
    exits_line(
        0,
        &format!("verify --state {st} --genesis {g} --node {api} checkpoint"),
    );
    let out = exits_line(
        1,
        &format!("verify --state {st} --genesis {g} --node {splitter} checkpoint"),
    );
    assert!(
        out.contains("split view") || out.contains("proof rejected"),
        "{out}"
    );
    t.down().expect("down");
}

/// `cp` signed with q validators' shares of the consortium key, read from
/// their key files.
fn consortium_signed(t: &Testnet, cp: provenance::Checkpoint) -> provenance::SignedCheckpoint {
    let (g, keyring) = genesis::load_genesis(&t.genesis_path()).expect("genesis");
    let message = cp.signing_message();
    let signers: Vec<_> = t
        .nodes
        .iter()
        .take(g.consortium.q as usize)
        .map(|n| {
            genesis::load_node_keys(&n.config.with_file_name("node.key"), &g, &keyring).expect("node keys")
        })
        .collect();
    let shares: Vec<_> = signers
        .iter()
        .map(|s| s.consortium.as_ref().expect("a validator").sign_share(&message))
        .collect();
    let signature = keyring
        .combine_consortium_shares(&message, &shares)
        .expect("combined");
    let mut validators: Vec<_> = signers.iter().filter_map(|s| s.sign_note(&cp)).collect();
    validators.sort_by_key(|v| v.validator);
    provenance::SignedCheckpoint {
        checkpoint: cp,
        signature,
        validators,
    }
}

fn manifest_authority(v: &mut Verifier, src: &Digest) -> String {
    let cp = v.light().latest_checkpoint(v.node()).expect("checkpoint");
    match v.ensure(&cp, src).expect("manifest").1.body {
        EntryBody::Manifest(m) => m.authority.to_string(),
        _ => panic!("not a manifest"),
    }
}

fn ds_of(t: &Testnet, v: &Verifier, src: &Digest) -> usize {
    let _ = v;
    let authority = t.client(0).source(src).expect("source").manifest.authority;
    t.nodes
        .iter()
        .position(|n| n.authority == authority.as_str())
        .expect("node")
}
