//! A consortium of separate hosts: every node in its own Linux network
//! namespace with its own address, joined by veth pairs to a bridge in a
//! namespace of its own (`testnet::netns`); nothing is added to the
//! test's own namespace. Configured only from `govtune genesis new`,
//! `govtune node init` and per-host files; every command runs on its
//! role's host, over https.
//!
//! Two data-source authorities, one of them three nodes signing 2-of-3
//! (one validator, two signing members), governance and an operator. The
//! rights-holders register with their command (Folio Society at two of its
//! nodes), governance publishes the policy, the operator runs a campaign
//! from its host; the Folio validator's link is cut mid-campaign and
//! restored. After the campaign closes every node has the same root; the
//! operator's node loses its data folder and restarts empty, and catches
//! up; a trace asked of a data-source node verifies with `--recompute`.
//! With the operator's node gone entirely, `verify model` and a recomputed
//! trace still pass against other nodes (blob custody, `node::blobs`).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use testnet::netns::{self, Lab};

/// (host, address, authority, signing member).
const HOSTS: [(&str, [u8; 4], &str, bool); 6] = [
    ("globe-1", [198, 51, 100, 10], "globe-press", false),
    ("folio-1", [198, 51, 100, 11], "folio-society", false),
    ("folio-2", [198, 51, 100, 12], "folio-society", true),
    ("folio-3", [198, 51, 100, 13], "folio-society", true),
    ("board-1", [198, 51, 100, 14], "standards-board", false),
    ("lab-1", [198, 51, 100, 15], "tuning-lab", false),
];
const AUDITOR: (&str, [u8; 4]) = ("auditor", [198, 51, 100, 20]);
/// The data-source host whose link is cut mid-campaign.
const CUT: &str = "folio-1";

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_govtune"))
}

fn data() -> PathBuf {
    std::fs::canonicalize(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data")).expect("data")
}

fn addr(host: &str) -> String {
    HOSTS
        .iter()
        .find(|h| h.0 == host)
        .map(|h| Ipv4Addr::from(h.1).to_string())
        .unwrap_or_else(|| panic!("no host {host}"))
}

fn api(host: &str) -> String {
    format!("https://{}:8100", addr(host))
}

/// The consortium: hosts' addresses and roles, Folio Society 2-of-3.
fn consortium() -> String {
    let mut s = String::from(
        "name = \"example.org/multi-host\"\nmax_clock_skew_ms = 2000\n\n[params]\n\
         view_timeout_ms = 1500\nheartbeat_ms = 300\nmax_block_entries = 512\n\
         max_block_bytes = 4194304\npending_expiry_ms = 600000\n",
    );
    let roles = [
        ("globe-press", "Globe Press", "data-source"),
        ("folio-society", "Folio Society", "data-source"),
        ("standards-board", "Standards Board", "governance"),
        ("tuning-lab", "Tuning Lab", "operator"),
    ];
    for (id, name, role) in roles {
        s.push_str(&format!(
            "\n[[authority]]\nid = \"{id}\"\nname = \"{name}\"\nrole = \"{role}\"\n"
        ));
        if id == "folio-society" {
            s.push_str("threshold = 1\n");
        }
        for (host, ip, authority, member) in HOSTS {
            if authority == id {
                let ip = Ipv4Addr::from(ip);
                s.push_str(&format!(
                    "[[authority.node]]\nname = \"{host}\"\np2p_listen = \"/ip4/{ip}/tcp/7100\"\n\
                     api_listen = \"{ip}:8100\"\n"
                ));
                if member {
                    s.push_str("signing_member = true\n");
                }
            }
        }
    }
    s
}

struct Site {
    lab: Lab,
    root: PathBuf,
    started: Instant,
}

impl Site {
    fn dir(&self, host: &str) -> PathBuf {
        self.root.join(host)
    }

    /// Runs `govtune args` on `host`, in its folder; (exit code, output).
    fn run(&self, host: &str, args: &[&str]) -> (Option<i32>, String) {
        let out = self
            .lab
            .command(host, bin())
            .expect("host")
            .args(args)
            .current_dir(self.dir(host))
            .env_remove("GOVTUNE_NODE")
            .env_remove("GOVTUNE_TOKEN_FILE")
            .env_remove("GOVTUNE_GENESIS")
            .output()
            .expect("govtune runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        println!(
            "[{:>5.1} s] {host}$ govtune {}\n{text}",
            self.started.elapsed().as_secs_f64(),
            args.join(" ")
        );
        (out.status.code(), text)
    }

    /// Like [`Site::run`], which must exit 0.
    fn ok(&self, host: &str, args: &[&str]) -> String {
        let (code, out) = self.run(host, args);
        assert_eq!(code, Some(0), "on {host}: govtune {}:\n{out}", args.join(" "));
        out
    }

    /// Starts `host`'s node from its own configuration, logging to
    /// `node.log` in its folder.
    fn start(&self, host: &str) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir(host).join("node.log"))
            .expect("log");
        let mut cmd = self.lab.command(host, bin()).expect("host");
        cmd.args(["node", "--config", "node.toml"])
            .current_dir(self.dir(host))
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        netns::die_with_parent(&mut cmd);
        cmd.spawn().expect("the node starts")
    }

    /// (log size, root) of `host`'s node, asked from the auditor's host.
    fn head(&self, host: &str) -> Option<(u64, String)> {
        let (code, out) = self.run(
            AUDITOR.0,
            &[
                "node",
                "status",
                "--node",
                &api(host),
                "--genesis",
                "genesis.json",
                "--wait",
                "5",
            ],
        );
        if code != Some(0) {
            return None;
        }
        let size = out.split(" log size ").nth(1)?.split(' ').next()?.parse().ok()?;
        let root = out.split(" root ").nth(1)?.split(' ').next()?.to_string();
        Some((size, root))
    }

    /// Waits until every host in `hosts` reports the same root at a log
    /// size of at least `min`; returns it.
    fn converged(&self, hosts: &[&str], min: u64, within: Duration) -> (u64, String) {
        let deadline = Instant::now() + within;
        loop {
            let heads: BTreeSet<Option<(u64, String)>> = hosts.iter().map(|h| self.head(h)).collect();
            if heads.len() == 1 {
                if let Some(Some((size, root))) = heads.first() {
                    if *size >= min {
                        return (*size, root.clone());
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "{hosts:?} did not converge at size {min} or more: {heads:?}"
            );
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    fn log_tail(&self, host: &str) -> String {
        let text = std::fs::read_to_string(self.dir(host).join("node.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

/// Kills the nodes; the lab's namespaces go with the `Site`.
struct Nodes(Vec<(String, Child)>);

impl Nodes {
    fn kill(&mut self, host: &str) {
        if let Some(i) = self.0.iter().position(|(h, _)| h == host) {
            let (_, mut c) = self.0.remove(i);
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn write(path: PathBuf, text: &str) {
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

fn copy(from: PathBuf, to: PathBuf) {
    std::fs::copy(&from, &to).unwrap_or_else(|e| panic!("{} -> {}: {e}", from.display(), to.display()));
}

const POLICY: &str = r#"version = 2
authority = "standards-board"
policy_version = 1
admissible_licenses = ["CC0-1.0"]
admissible_purposes = ["research"]
event_granularity = "batch"
routing_granularity = "head"
depth_resolution = "layer"
signature_scheme = "bls12381"

[[depth]]
data_class = "literary"
max_depth = 4
clip_norm = 1.0

[memorisation]
loss_drop_z = 50.0
extraction = 0.9
canary_exposure = 20.0

[log_volume]
composite_batching = true
refusal_aggregation = true
"#;

fn terms(authority: &str, title: &str, text: &str) -> String {
    format!(
        "authority = \"{authority}\"\ntitle = \"{title}\"\ntext = \"{text}\"\nmax_bytes = 24576\n\
         example_bytes = 65\nlicense = \"CC0-1.0\"\npurposes = [\"research\"]\ndata_class = \"literary\"\n\
         not_before = \"2026-01-01T00:00:00Z\"\nnot_after = \"2036-01-01T00:00:00Z\"\n"
    )
}

const CAMPAIGN: &str = r#"name = "plays-lora"
operator = "tuning-lab"
purpose = "research"
base_weights = "model.safetensors"
policy = "policy.toml"
probe = "sonnets.txt"
probe_windows = 8

[settings]
batch_size = 16
epochs = 1
max_steps = 16
seed = 11
sketch_seed = 42
sketch_side = 2
checkpoint_every = 8

[settings.model]
context = 64
d_model = 128
layers = 4
heads = 4
mlp_mult = 4

[settings.lora]
rank = 4
alpha = 8.0
dropout = 0.0

[settings.optim]
lr = 0.002
beta1 = 0.9
beta2 = 0.999
eps = 1e-8
weight_decay = 0.01
"#;

#[test]
fn multi_host_consortium_survives_a_cut_link_and_the_loss_of_the_operators_node() {
    let started = Instant::now();
    let mut hosts: Vec<(&str, Ipv4Addr)> = HOSTS.iter().map(|h| (h.0, Ipv4Addr::from(h.1))).collect();
    hosts.push((AUDITOR.0, Ipv4Addr::from(AUDITOR.1)));
    let lab = match Lab::bridged(&hosts) {
        Ok(lab) => lab,
        Err(e) if netns::may_skip() => {
            eprintln!("skipped ({} is set): {e}", netns::SKIP_VAR);
            return;
        }
        Err(e) => panic!("cannot make the test's network namespaces (run as root with iproute2): {e}"),
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let site = Site {
        lab,
        root: tmp.path().to_path_buf(),
        started,
    };
    for (h, _) in &hosts {
        std::fs::create_dir_all(site.dir(h)).expect("host folder");
    }

    // The ceremony, then each member gets only its own node's folder.
    let ceremony = site.root.join("ceremony");
    std::fs::create_dir_all(&ceremony).expect("ceremony");
    write(ceremony.join("consortium.toml"), &consortium());
    let out = std::process::Command::new(bin())
        .args([
            "genesis",
            "new",
            "--consortium",
            "consortium.toml",
            "--out",
            "out",
        ])
        .current_dir(&ceremony)
        .output()
        .expect("genesis new");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let genesis = ceremony.join("out/genesis.json");
    for (h, _) in &hosts {
        copy(genesis.clone(), site.dir(h).join("genesis.json"));
    }
    for (h, ..) in HOSTS {
        for entry in std::fs::read_dir(ceremony.join("out/nodes").join(h)).expect("node folder") {
            let p = entry.expect("entry").path();
            let to = site.dir(h).join(p.file_name().expect("name"));
            copy(p, to);
        }
    }
    std::fs::remove_dir_all(ceremony.join("out/nodes")).expect("the ceremony's copies destroyed");

    // Each node from `node init` on its own host.
    let mut nodes = Nodes(Vec::new());
    for (h, ..) in HOSTS {
        site.ok(
            h,
            &[
                "node",
                "init",
                "--genesis",
                "genesis.json",
                "--name",
                h,
                "--out",
                "node.toml",
            ],
        );
        nodes.0.push((h.to_string(), site.start(h)));
    }
    for (h, ..) in HOSTS {
        site.ok(
            AUDITOR.0,
            &[
                "node",
                "status",
                "--node",
                &api(h),
                "--genesis",
                "genesis.json",
                "--wait",
                "120",
            ],
        );
    }

    // Governance publishes the policy; the operator gets a copy.
    write(site.dir("board-1").join("policy.toml"), POLICY);
    let published = site.ok(
        "board-1",
        &[
            "policy",
            "publish",
            "--node",
            &api("board-1"),
            "--token-file",
            "admin.token",
            "--genesis",
            "genesis.json",
            "--policy",
            "policy.toml",
        ],
    );
    assert!(published.contains("committed"), "{published}");
    copy(
        site.dir("board-1").join("policy.toml"),
        site.dir("lab-1").join("policy.toml"),
    );

    // The rights-holders register; Folio Society at two of its nodes (its
    // tools hold both tokens). Packages go to the operator and to each of
    // the authority's nodes.
    let plays = data().join("plays/sources");
    let register = |host: &str, authority: &str, title: &str, file: &str, at: &[&str]| {
        copy(plays.join(file), site.dir(host).join(file));
        write(site.dir(host).join("terms.toml"), &terms(authority, title, file));
        let tokens: Vec<String> = at.iter().map(|n| format!("{n}.token")).collect();
        let urls: Vec<String> = at.iter().map(|n| api(n)).collect();
        let mut args = vec![
            "source",
            "register",
            "--genesis",
            "genesis.json",
            "--terms",
            "terms.toml",
        ];
        for (n, (url, token)) in at.iter().zip(urls.iter().zip(&tokens)) {
            copy(site.dir(n).join("admin.token"), site.dir(host).join(token));
            std::fs::set_permissions(
                site.dir(host).join(token),
                std::os::unix::fs::PermissionsExt::from_mode(0o600),
            )
            .expect("0600");
            args.extend(["--node", url.as_str(), "--token-file", token.as_str()]);
        }
        let out = site.ok(host, &args);
        assert!(out.contains("committed"), "{out}");
        let package = format!("{file}.package");
        copy(site.dir(host).join(&package), site.dir("lab-1").join(&package));
        for (h, _, a, _) in HOSTS {
            if a == authority {
                std::fs::create_dir_all(site.dir(h).join("sources")).expect("sources");
                copy(
                    site.dir(host).join(&package),
                    site.dir(h).join("sources").join(&package),
                );
            }
        }
        package
    };
    let globe = register(
        "globe-1",
        "globe-press",
        "As You Like It",
        "as_you_like_it.txt",
        &["globe-1"],
    );
    // One node of a 2-of-3 authority cannot register for it.
    copy(
        plays.join("comedy_of_errors.txt"),
        site.dir("folio-1").join("comedy_of_errors.txt"),
    );
    write(
        site.dir("folio-1").join("alone.toml"),
        &terms("folio-society", "The Comedy of Errors", "comedy_of_errors.txt"),
    );
    // Nor can one node given twice.
    let folio_1 = api("folio-1");
    for (nodes, refusal) in [(1, "signs with 2 of its 3 nodes"), (2, "is given twice")] {
        let mut args = vec![
            "source",
            "register",
            "--genesis",
            "genesis.json",
            "--terms",
            "alone.toml",
        ];
        for _ in 0..nodes {
            args.extend(["--node", folio_1.as_str(), "--token-file", "admin.token"]);
        }
        let (code, out) = site.run("folio-1", &args);
        assert_eq!(code, Some(2), "{out}");
        assert!(out.contains(refusal), "{out}");
    }
    let folio = register(
        "folio-1",
        "folio-society",
        "The Comedy of Errors",
        "comedy_of_errors.txt",
        &["folio-1", "folio-2"],
    );

    // The operator's campaign from its host; the Folio validator's link is
    // cut while it runs, then restored.
    copy(
        data().join("base/model.safetensors"),
        site.dir("lab-1").join("model.safetensors"),
    );
    copy(
        data().join("plays/probe/sonnets.txt"),
        site.dir("lab-1").join("sonnets.txt"),
    );
    write(site.dir("lab-1").join("campaign.toml"), CAMPAIGN);
    let (size_before, _) = site.head("lab-1").expect("the operator's node answers");
    let campaign_log = site.dir("lab-1").join("campaign.out");
    let mut run = site
        .lab
        .command("lab-1", bin())
        .expect("host")
        .args([
            "campaign",
            "run",
            "--node",
            &api("lab-1"),
            "--token-file",
            "admin.token",
            "--genesis",
            "genesis.json",
            "--config",
            "campaign.toml",
            "--package",
            &globe,
            "--package",
            &folio,
            "--model-out",
            "model-tuned.safetensors",
        ])
        .current_dir(site.dir("lab-1"))
        .stdout(std::fs::File::create(&campaign_log).expect("log"))
        .stderr(Stdio::inherit())
        .spawn()
        .expect("campaign run");
    let deadline = Instant::now() + Duration::from_secs(300);
    while site.head("lab-1").is_none_or(|(s, _)| s < size_before + 6) {
        assert!(Instant::now() < deadline, "the campaign does not progress");
        assert!(
            run.try_wait().expect("campaign").is_none(),
            "the campaign ended early"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    site.lab.cut(CUT).expect("cut");
    let cut_at = site.head("lab-1").map(|h| h.0).unwrap_or(0);
    println!(
        "[{:>5.1} s] {CUT}'s link cut at log size {cut_at}",
        started.elapsed().as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(8));
    let during = site.head("lab-1").map(|h| h.0).unwrap_or(0);
    site.lab.restore(CUT).expect("restore");
    println!(
        "[{:>5.1} s] {CUT}'s link restored; the log grew {cut_at} -> {during} meanwhile",
        started.elapsed().as_secs_f64()
    );
    assert!(
        during > cut_at,
        "with one validator (and one of Folio's three signers) cut off, the campaign goes on"
    );
    let status = run.wait().expect("campaign");
    let campaign_out = std::fs::read_to_string(&campaign_log).expect("campaign log");
    println!("{campaign_out}");
    assert!(status.success(), "the campaign finished");
    let campaign = campaign_out
        .lines()
        .find_map(|l| {
            l.strip_prefix("campaign ")
                .and_then(|r| r.split_whitespace().next())
                .filter(|d| d.len() == 64)
        })
        .expect("the campaign's digest")
        .to_string();

    // Every node has the same root.
    let all: Vec<&str> = HOSTS.iter().map(|h| h.0).collect();
    let (size, root) = site.converged(&all, size_before + 10, Duration::from_secs(120));
    println!(
        "[{:>5.1} s] every node: log size {size} root {root}",
        started.elapsed().as_secs_f64()
    );

    // The operator's node loses its data folder and restarts empty.
    nodes.kill("lab-1");
    std::fs::remove_dir_all(site.dir("lab-1").join("data")).expect("the operator's store deleted");
    nodes.0.push(("lab-1".into(), site.start("lab-1")));
    let caught = Instant::now();
    let (size2, root2) = site.converged(&all, size, Duration::from_secs(120));
    println!(
        "[{:>5.1} s] the operator's node caught up from empty in {:.1} s (log size {size2})",
        started.elapsed().as_secs_f64(),
        caught.elapsed().as_secs_f64()
    );
    if size2 == size {
        assert_eq!(root2, root);
    }
    let log = std::fs::read_to_string(site.dir("lab-1").join("node.log")).expect("the operator's node log");
    let starts: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("node::start: node lab-1"))
        .collect();
    assert_eq!(starts.len(), 2, "{log}");
    assert!(
        starts[1].contains("at height 0"),
        "restarted empty: {}",
        starts[1]
    );

    // A trace asked of a data-source node verifies, scores recomputed.
    let trace = |node: &str| {
        let answer = format!("answer-{node}.json");
        site.ok(
            AUDITOR.0,
            &[
                "trace",
                "--node",
                &api(node),
                "--genesis",
                "genesis.json",
                "--campaign",
                &campaign,
                "--output",
                "All the world's a stage",
                "--out",
                &answer,
            ],
        );
        let out = site.ok(
            AUDITOR.0,
            &[
                "verify",
                "--genesis",
                "genesis.json",
                "--node",
                &api(node),
                "trace",
                "--answer",
                &answer,
                "--recompute",
            ],
        );
        assert!(out.contains("PASS"), "{out}");
    };
    trace("globe-1");

    // The operator's node gone entirely: the model and a recomputed trace
    // still verify against other nodes.
    nodes.kill("lab-1");
    copy(
        site.dir("lab-1").join("model-tuned.safetensors"),
        site.dir(AUDITOR.0).join("model-tuned.safetensors"),
    );
    let model = site.ok(
        AUDITOR.0,
        &[
            "verify",
            "--genesis",
            "genesis.json",
            "--node",
            &api("folio-2"),
            "model",
            "--campaign",
            &campaign,
            "--weights",
            "model-tuned.safetensors",
        ],
    );
    assert!(model.contains("PASS"), "{model}");
    trace("board-1");
    for h in &all {
        assert!(
            !site.log_tail(h).contains("panicked"),
            "{h}:\n{}",
            site.log_tail(h)
        );
    }
    println!("multi-host test: {:.0} s in all", started.elapsed().as_secs_f64());
}
