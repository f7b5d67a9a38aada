//! Consensus with real threshold BLS over the simulated network (no faults,
//! 5–10 ms links): finalised blocks per second of CPU and CPU time per
//! finalised block for n = 4 and n = 7, beside the floor, the cost of the
//! signature operations the run performed, each timed on its own in the
//! same run. Prints a table; `cargo bench -p consensus`.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Instant;

use consensus::sim::{bls_validators, run, Scenario};
use consensus::{BlsThreshold, CertificateScheme, ValidatorIndex};
use provenance::Bytes;

#[derive(Default)]
struct Counts {
    sign: Cell<u64>,
    verify_share: Cell<u64>,
    combine: Cell<u64>,
    verify_cert: Cell<u64>,
}

struct Counting {
    inner: BlsThreshold,
    counts: Rc<Counts>,
}

impl CertificateScheme for Counting {
    type Share = Bytes;
    type Certificate = Bytes;
    fn sign(&self, m: &[u8]) -> Bytes {
        self.counts.sign.set(self.counts.sign.get() + 1);
        self.inner.sign(m)
    }
    fn verify_share(&self, s: ValidatorIndex, m: &[u8], sh: &Bytes) -> bool {
        self.counts.verify_share.set(self.counts.verify_share.get() + 1);
        self.inner.verify_share(s, m, sh)
    }
    fn combine(&self, m: &[u8], shares: &[(ValidatorIndex, Bytes)]) -> Option<Bytes> {
        self.counts.combine.set(self.counts.combine.get() + 1);
        self.inner.combine(m, shares)
    }
    fn verify_certificate(&self, m: &[u8], c: &Bytes) -> bool {
        self.counts.verify_cert.set(self.counts.verify_cert.get() + 1);
        self.inner.verify_certificate(m, c)
    }
}

fn time<F: FnMut()>(reps: u32, mut f: F) -> f64 {
    let t = Instant::now();
    for _ in 0..reps {
        f();
    }
    t.elapsed().as_secs_f64() / f64::from(reps)
}

fn main() {
    println!("consensus with threshold BLS over the simulated network (all n validators in one thread)");
    println!("| n | blocks | CPU s | blocks/s of CPU | CPU ms per block (all nodes) | signature floor ms per block | engine overhead |");
    println!("|---|---|---|---|---|---|---|");
    for n in [4u16, 7] {
        let (keyring, signers) = bls_validators(n, 1);
        let blocks = 40u64;
        let s = Scenario {
            n,
            observers: 0,
            seed: 1,
            byzantine: vec![],
            latency: (5, 10),
            loss: 0.0,
            partitions: vec![],
            crashes: vec![],
            quorum: None,
            view_timeout: 400,
            max_skew: 500,
            target_blocks: blocks,
            time_limit: 600_000,
        };
        let counts = Rc::new(Counts::default());
        let t = Instant::now();
        let r = run(&s, |i, _| Counting {
            inner: BlsThreshold::new(keyring.clone(), signers[i as usize].clone()),
            counts: counts.clone(),
        });
        let cpu = t.elapsed().as_secs_f64();
        let done = r.min_honest_height();
        assert!(done >= blocks && r.violations.is_empty());

        // The floor: each operation timed alone, times how often it ran.
        let scheme = BlsThreshold::new(keyring.clone(), signers[0].clone());
        let msg = b"floor";
        let share = scheme.sign(msg);
        let q = (n - (n - 1) / 3) as usize;
        let shares: Vec<(ValidatorIndex, Bytes)> = (0..q)
            .map(|i| {
                (
                    i as ValidatorIndex,
                    BlsThreshold::new(keyring.clone(), signers[i].clone()).sign(msg),
                )
            })
            .collect();
        let cert = scheme.combine(msg, &shares).expect("combine");
        let t_sign = time(20, || {
            scheme.sign(msg);
        });
        let t_vs = time(20, || {
            scheme.verify_share(0, msg, &share);
        });
        let t_comb = time(10, || {
            scheme.combine(msg, &shares);
        });
        let t_vc = time(20, || {
            scheme.verify_certificate(msg, &cert);
        });
        let floor = counts.sign.get() as f64 * t_sign
            + counts.verify_share.get() as f64 * t_vs
            + counts.combine.get() as f64 * t_comb
            + counts.verify_cert.get() as f64 * t_vc;
        println!(
            "| {n} | {done} | {cpu:.2} | {:.1} | {:.1} | {:.1} | {:.2}x |",
            done as f64 / cpu,
            cpu * 1e3 / done as f64,
            floor * 1e3 / done as f64,
            cpu / floor
        );
        println!(
            "|   | ops: {} signs, {} share verifies, {} combines, {} certificate verifies; unit ms: {:.3} / {:.3} / {:.3} / {:.3} | | | | | |",
            counts.sign.get(),
            counts.verify_share.get(),
            counts.combine.get(),
            counts.verify_cert.get(),
            t_sign * 1e3,
            t_vs * 1e3,
            t_comb * 1e3,
            t_vc * 1e3
        );
    }
}
