//! The engine under the deterministic simulator: safety with f Byzantine
//! validators over many random schedules, liveness after partitions heal,
//! determinism, a broken quorum caught by the same checker, and the same
//! scenarios with real threshold BLS.

use std::collections::BTreeMap;

use consensus::sim::{bls_validators, run, Behaviour, MockScheme, Report, Scenario};
use consensus::BlsThreshold;

/// Views an honest validator may take, after the last partition heals, to
/// finalise a new block: f + 1 leaders may fail in a row (f Byzantine, one
/// crashed or lagging), each costing a view, plus slack for re-sends over a
/// lossy network and for a restarted validator catching up.
const LIVENESS_BOUND_VIEWS: u64 = 12;

fn mock(s: &Scenario) -> Report {
    let n = s.n;
    run(s, |i, q| MockScheme::new(i, n, q))
}

fn check(report: &Report, s: &Scenario) {
    assert!(
        report.violations.is_empty(),
        "seed {} n {}: {:?}",
        s.seed,
        s.n,
        report.violations
    );
    assert!(
        report.min_honest_height() >= s.target_blocks,
        "seed {} n {}: an honest validator finalised only {} blocks by {} ms",
        s.seed,
        s.n,
        report.min_honest_height(),
        report.time
    );
    let byzantine: Vec<u16> = s.byzantine.iter().map(|(i, _)| *i).collect();
    for b in &report.blamed {
        assert!(
            byzantine.contains(b),
            "seed {}: honest validator {b} was blamed",
            s.seed
        );
    }
    for (i, v) in report.views_to_finalize_after_heal.iter().enumerate() {
        let v = v.unwrap_or_else(|| {
            panic!(
                "seed {}: honest validator #{i} finalised nothing after the heal",
                s.seed
            )
        });
        assert!(
            v <= LIVENESS_BOUND_VIEWS,
            "seed {}: {v} views to finalise after the heal",
            s.seed
        );
    }
}

fn seeds() -> u64 {
    std::env::var("GOVTUNE_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000)
}

#[test]
fn safety_and_liveness_hold_over_random_seeds_with_f_byzantine_validators() {
    let total = seeds();
    let started = std::time::Instant::now();
    let mut fired: BTreeMap<Behaviour, u64> = BTreeMap::new();
    let mut blocks = 0u64;
    let mut catch_up = 0u64;
    for seed in 0..total {
        // Two thirds of the seeds with n = 4 (f = 1), one third n = 7 (f = 2).
        let n = if seed % 3 == 2 { 7 } else { 4 };
        let s = Scenario::random(n, seed);
        let r = mock(&s);
        check(&r, &s);
        blocks += r.min_honest_height();
        catch_up += r.catch_up_messages;
        for (b, c) in r.fired {
            *fired.entry(b).or_default() += c;
        }
    }
    for b in Behaviour::BYZANTINE {
        assert!(
            fired.get(&b).copied().unwrap_or(0) > 0,
            "behaviour {b:?} never fired"
        );
    }
    assert!(catch_up > 0, "block sync and block fetch were never exercised");
    println!(
        "{total} seeds, {blocks} blocks finalised (min per seed summed), {catch_up} catch-up messages, behaviours fired: {fired:?}, {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn the_same_seed_gives_the_same_trace_and_different_seeds_differ() {
    let a = mock(&Scenario::random(4, 17));
    let b = mock(&Scenario::random(4, 17));
    let c = mock(&Scenario::random(4, 18));
    assert_eq!(a.trace, b.trace);
    assert_eq!(a.chains, b.chains);
    assert_ne!(a.trace, c.trace);
}

#[test]
fn a_broken_quorum_of_q_minus_1_is_caught_by_the_checker() {
    let mut caught = None;
    for seed in 0..500 {
        let mut s = Scenario::random(4, seed);
        s.quorum = Some(2);
        s.byzantine = vec![(0, Behaviour::Equivocator)];
        s.partitions.clear();
        let r = mock(&s);
        if !r.violations.is_empty() {
            caught = Some((seed, r.violations));
            break;
        }
    }
    let (seed, v) = caught.expect("quorum q - 1 must break safety in some seed");
    println!("broken quorum caught at seed {seed}: {v:?}");
}

#[test]
fn a_partition_without_quorum_stalls_and_liveness_returns_after_it_heals() {
    for seed in 0..50 {
        let mut s = Scenario::random(4, seed);
        s.byzantine.clear();
        s.crashes.clear();
        // 2 | 2: no side has a quorum of 3 for 4 seconds.
        s.partitions = vec![consensus::sim::Partition {
            from: 1_000,
            until: 5_000,
            side: vec![0, 1],
        }];
        let r = mock(&s);
        check(&r, &s);
    }
}

#[test]
fn the_whole_consortium_crashes_at_once_and_extends_its_notarised_tip() {
    // Everyone down at the same instant, votes in flight lost: a notarised
    // block nobody saw final survives only in the validators' kept blocks.
    for seed in 0..200 {
        let mut s = Scenario::random(4, seed);
        s.byzantine.clear();
        s.partitions.clear();
        let at = s.crashes[0].at;
        let restart = s.crashes[0].restart;
        s.crashes = (0..s.n)
            .map(|node| consensus::sim::Crash { node, at, restart })
            .collect();
        let r = mock(&s);
        check(&r, &s);
    }
}

#[test]
fn a_validator_crashed_for_thousands_of_blocks_catches_up_after_its_restart() {
    // The engine keeps only the finalised tip: the restarted validator is
    // served from the others' stored chains, chunk after chunk of at most
    // MAX_SYNC_BLOCKS, asking f + 1 of them at a time.
    for seed in 0..3 {
        let mut s = Scenario::random(4, seed);
        s.byzantine.clear();
        s.partitions.clear();
        s.loss = 0.0;
        s.view_timeout = 60;
        s.crashes = vec![consensus::sim::Crash {
            node: 1,
            at: 100,
            restart: 400_000,
        }];
        s.target_blocks = 3 * consensus::MAX_SYNC_BLOCKS as u64 + 200;
        s.time_limit = 2_000_000;
        let r = mock(&s);
        assert!(r.violations.is_empty(), "seed {seed}: {:?}", r.violations);
        assert!(
            r.min_honest_height() >= s.target_blocks,
            "seed {seed}: the restarted validator finalised {} of {} blocks by {} ms",
            r.min_honest_height(),
            s.target_blocks,
            r.time
        );
    }
}

/// The mock-signature scenarios again with real threshold BLS: 10 seeds of
/// 4 validators and 3 of 7 by default (about 3 minutes of CI's 2 cores at
/// 20 + 5; `GOVTUNE_SIM_BLS_SEEDS=N` runs N and N/4).
#[test]
fn real_threshold_bls_runs_the_same_scenarios() {
    let seeds: u64 = std::env::var("GOVTUNE_SIM_BLS_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    for n in [4u16, 7] {
        let (keyring, signers) = bls_validators(n, u64::from(n));
        let per_n = if n == 4 { seeds } else { seeds.div_ceil(4) };
        for seed in 0..per_n {
            let s = Scenario::random(n, seed);
            let r = run(&s, |i, _| {
                BlsThreshold::new(keyring.clone(), signers[i as usize].clone())
            });
            check(&r, &s);
        }
    }
}

/// Signing members (observers, indexes n..) beside n validators with f
/// Byzantine ones: every safety and liveness check holds with them counted
/// as honest nodes (their chains prefixes of every other honest chain,
/// finalising after the heal like the validators), and none ever votes or
/// proposes. A quarter of the seeds of the main run, and a few with real
/// threshold BLS, where an observer holds no share at all.
#[test]
fn signing_members_follow_the_chain_and_never_vote_with_f_byzantine_validators() {
    for seed in 0..seeds().div_ceil(4) {
        let n = if seed % 3 == 2 { 7 } else { 4 };
        let s = Scenario {
            observers: 2,
            ..Scenario::random(n, seed)
        };
        let r = mock(&s);
        check(&r, &s);
        assert_eq!(r.chains.len(), usize::from(n) + 2);
        for o in usize::from(n)..usize::from(n) + 2 {
            assert!(
                r.chains[o].len() as u64 >= s.target_blocks,
                "seed {seed}: observer {o} followed {} blocks",
                r.chains[o].len()
            );
        }
    }
    let n = 4u16;
    let (keyring, signers) = bls_validators(n, 40);
    for seed in 0..3 {
        let s = Scenario {
            observers: 2,
            ..Scenario::random(n, seed)
        };
        let r = run(&s, |i, _| match signers.get(usize::from(i)) {
            Some(signer) => BlsThreshold::new(keyring.clone(), signer.clone()),
            None => BlsThreshold::observer(keyring.clone(), Default::default()),
        });
        check(&r, &s);
    }
}
