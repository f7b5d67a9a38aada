//! A Byzantine member on the real network. Three honest node processes and
//! one Byzantine member (the test binary's `GOVTUNE_BYZANTINE` mode) that
//! holds node-1's genesis keys (a data-source validator) and attacks over
//! the real libp2p stack for 28 s. Meanwhile, for at least 20 s, an honest
//! data source registers and the operator submits steps whose examples
//! come only from honest sources: each must commit within 10 s, every
//! honest node's height and log keep growing, its resident memory grows by
//! less than 200 MB, the attack is counted in `/metrics` by kind, and a
//! member sending provably invalid messages is disconnected.
//!
//! Each test prints one row of README's Byzantine table.

use std::path::Path;
use std::time::{Duration, Instant};

use testnet::workload::Workload;
use testnet::{NodeSettings, Testnet};

const MACBETH: &[u8] = include_bytes!("../../../testnet/fixtures/macbeth.txt");
const TWELFTH_NIGHT: &[u8] = include_bytes!("../../../testnet/fixtures/twelfth_night.txt");

const MEMBER: usize = 1;
const HONEST: [usize; 3] = [0, 2, 3];
const ATTACK_SECONDS: u64 = 28;
const PROBE_FOR: Duration = Duration::from_secs(20);
const COMMIT_WITHIN: Duration = Duration::from_secs(10);

fn rss(pid: u32) -> u64 {
    testnet::runner::resident_bytes(pid).expect("the node's resident memory")
}

/// The value of `name` (with its labels, if any) in a Prometheus text.
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// What the attack must show in the honest nodes' metrics.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Provably invalid: counted under this misbehaviour kind, the member
    /// banned.
    Banned(&'static str),
    /// A valid flood: counted as rate-limited under this kind, nobody
    /// banned.
    Limited(&'static str),
    /// A valid flood of entries: rate-limited as offers, and, with each
    /// node holding at most this many pending per authority, refused at
    /// that cap (the other authorities' entries still commit).
    Capped(usize),
}

fn attacked(mode: &str, expect: Expect) {
    let dir = tempfile::tempdir().expect("tmp");
    let settings = NodeSettings {
        view_timeout_ms: Some(1500),
        heartbeat_ms: Some(300),
        max_pending_per_authority: match expect {
            Expect::Capped(cap) => Some(cap),
            _ => None,
        },
        ..NodeSettings::default()
    };
    let mut t =
        Testnet::create(dir.path(), 4, Path::new(env!("CARGO_BIN_EXE_govtune")), &settings).expect("testnet");
    assert_eq!(t.nodes[MEMBER].role, "data-source");
    for i in HONEST {
        t.start(i).expect("start");
    }
    for i in HONEST {
        t.wait_healthy(i, Duration::from_secs(120)).expect("healthy");
    }
    let mut w = Workload::with_sources_on(
        &t,
        &[("Macbeth", MACBETH), ("Twelfth Night", TWELFTH_NIGHT)],
        &[0],
    )
    .expect("workload");
    w.register(&t).expect("register");

    let pid = |t: &Testnet, i: usize| t.nodes[i].pid.expect("pid");
    let rss_before: Vec<u64> = HONEST.iter().map(|&i| rss(pid(&t, i))).collect();
    let health = |t: &Testnet, i: usize| t.client(i).health().expect("health");
    let before: Vec<(u64, u64)> = HONEST
        .iter()
        .map(|&i| {
            let h = health(&t, i);
            (h.height, h.log_size)
        })
        .collect();

    t.start_with(
        MEMBER,
        &[
            ("GOVTUNE_BYZANTINE", mode),
            ("GOVTUNE_BYZANTINE_SECONDS", &ATTACK_SECONDS.to_string()),
        ],
    )
    .expect("the member starts");
    let attack = Instant::now();
    // Let it connect and open fire.
    std::thread::sleep(Duration::from_secs(2));

    let ds = t.admin(0).expect("admin");
    let op = t.admin(t.by_role("operator").expect("op")).expect("admin");
    let (mut registrations, mut steps) = (Vec::new(), Vec::new());
    let mut peak = vec![0u64; HONEST.len()];
    let probing = Instant::now();
    let mut k = 0;
    while probing.elapsed() < PROBE_FOR {
        let mut m = w.sources[0].manifest.clone();
        m.title = format!("registered under attack {k}");
        let t0 = Instant::now();
        let d = ds
            .submit("/v1/sources", &m)
            .expect("registration accepted")
            .digest;
        t.client(0)
            .wait_committed(&[d], COMMIT_WITHIN)
            .unwrap_or_else(|e| panic!("{mode}: registration {k} not committed within 10 s: {e}"));
        registrations.push(t0.elapsed());

        let e = w.next_event(2, false).expect("event");
        let t0 = Instant::now();
        let d = op.submit_event(&e).expect("step accepted").digest;
        op.wait_committed(&[d], COMMIT_WITHIN)
            .unwrap_or_else(|e| panic!("{mode}: step {k} not committed within 10 s: {e}"));
        steps.push(t0.elapsed());
        for (j, &i) in HONEST.iter().enumerate() {
            peak[j] = peak[j].max(rss(pid(&t, i)));
        }
        k += 1;
    }
    assert!(
        attack.elapsed() < Duration::from_secs(ATTACK_SECONDS),
        "{mode}: the probes outlasted the attack"
    );

    // Heights and logs grew on every honest node (one may be a block or two
    // behind the one a probe was confirmed on).
    for (j, &i) in HONEST.iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(10);
        let h = loop {
            let h = health(&t, i);
            if h.log_size >= before[j].1 + 2 * k as u64 || Instant::now() > deadline {
                break h;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(h.height > before[j].0, "{mode}: node {i}'s height stalled");
        assert!(
            h.log_size >= before[j].1 + 2 * k as u64,
            "{mode}: node {i}'s log grew by less than what was probed ({} to {})",
            before[j].1,
            h.log_size
        );
    }
    let growth: Vec<u64> = peak
        .iter()
        .zip(&rss_before)
        .map(|(p, b)| p.saturating_sub(*b))
        .collect();
    for (j, g) in growth.iter().enumerate() {
        assert!(
            *g < 200 << 20,
            "{mode}: node {}'s resident memory grew by {} MB",
            HONEST[j],
            g >> 20
        );
    }

    // The member is done: its own account of the attack.
    let deadline = Instant::now() + Duration::from_secs(ATTACK_SECONDS + 15);
    while t.alive(MEMBER) {
        assert!(Instant::now() < deadline, "{mode}: the member did not stop");
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = std::fs::read_to_string(&t.nodes[MEMBER].log).expect("member log");
    let report = log
        .lines()
        .find(|l| l.starts_with("byzantine member:"))
        .unwrap_or_else(|| panic!("{mode}: no report in the member's log:\n{log}"))
        .to_string();
    let disconnected: u64 = report
        .split("disconnected ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("a disconnection count");

    let metrics: Vec<String> = HONEST
        .iter()
        .map(|&i| t.client(i).metrics().expect("metrics"))
        .collect();
    let bans: Vec<u64> = metrics
        .iter()
        .map(|m| metric(m, "govtune_peer_bans_total"))
        .collect();
    let counted: Vec<u64> = match expect {
        Expect::Banned(kind) => {
            let c: Vec<u64> = metrics
                .iter()
                .map(|m| metric(m, &format!("govtune_misbehaviour_total{{kind=\"{kind}\"}}")))
                .collect();
            assert!(
                c.iter().all(|n| *n > 0),
                "{mode}: {kind} not counted everywhere: {c:?}"
            );
            assert!(
                bans.iter().all(|n| *n > 0),
                "{mode}: not banned everywhere: {bans:?}"
            );
            assert!(
                disconnected > 0,
                "{mode}: the member was never disconnected: {report}"
            );
            c
        }
        Expect::Capped(_) => {
            let limited: Vec<u64> = metrics
                .iter()
                .map(|m| metric(m, "govtune_rate_limited_total{kind=\"offer\"}"))
                .collect();
            let full: Vec<u64> = metrics
                .iter()
                .map(|m| metric(m, "govtune_pending_full_total"))
                .collect();
            assert!(
                limited.iter().any(|n| *n > 0),
                "{mode}: offers never limited: {limited:?}"
            );
            assert!(
                full.iter().all(|n| *n > 0),
                "{mode}: the pending cap never bit: {full:?}"
            );
            assert_eq!(bans, vec![0; HONEST.len()], "{mode}: a valid flood is not banned");
            full
        }
        Expect::Limited(kind) => {
            let c: Vec<u64> = metrics
                .iter()
                .map(|m| metric(m, &format!("govtune_rate_limited_total{{kind=\"{kind}\"}}")))
                .collect();
            assert!(
                c.iter().all(|n| *n > 0),
                "{mode}: {kind} not limited everywhere: {c:?}"
            );
            assert_eq!(bans, vec![0; HONEST.len()], "{mode}: a valid flood is not banned");
            c
        }
    };
    registrations.sort();
    steps.sort();
    let ms = |d: Duration| d.as_millis();
    println!(
        "| {mode} | {} s | {k} | {} / {} ms | {} / {} ms | {} MB | {counted:?} | {} |",
        ATTACK_SECONDS,
        ms(percentile(&registrations, 0.5)),
        ms(percentile(&registrations, 0.99)),
        ms(percentile(&steps, 0.5)),
        ms(percentile(&steps, 0.99)),
        growth.iter().max().copied().unwrap_or(0) >> 20,
        if disconnected > 0 {
            "disconnected"
        } else {
            "connected"
        },
    );
    println!("{report}");
}

#[test]
fn byzantine_member_invalid_signatures() {
    attacked("invalid-signatures", Expect::Banned("foreign_signature"));
}

#[test]
fn byzantine_member_duplicate_signatures() {
    attacked("duplicate-signatures", Expect::Limited("signature"));
}

#[test]
fn byzantine_member_offer_spam() {
    attacked("offer-spam", Expect::Capped(64));
}

#[test]
fn byzantine_member_oversized() {
    attacked("oversized", Expect::Banned("malformed"));
}

#[test]
fn byzantine_member_bogus_shares() {
    attacked("bogus-shares", Expect::Banned("bad_checkpoint"));
}

#[test]
fn byzantine_member_fake_heights() {
    attacked("fake-heights", Expect::Banned("invalid_proposal"));
}

#[test]
fn byzantine_member_sync_flood() {
    attacked("sync-flood", Expect::Limited("sync_request"));
}

#[test]
fn byzantine_member_equivocation() {
    attacked("equivocation", Expect::Banned("equivocation"));
}
