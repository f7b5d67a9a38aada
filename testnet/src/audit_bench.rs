//! `govtune bench audit`: what replay audits cost a running consortium.
//! The same honest campaign (the campaign file, cut to a number of steps)
//! on a fresh 4-node loopback testnet at each audit rate: the campaign's
//! wall time per step and each co-signer node's CPU seconds per step (its
//! process's user + system time, from `/proc`), measured from the first
//! committed step to the last so that registration and start-up are left
//! out. Ratios are to the first rate (0: tickets only where a policy
//! audits, nothing replayed).

use std::path::Path;
use std::time::{Duration, Instant};

use tuner::campaign::{Progress, ProgressInfo};

use crate::{NodeSettings, Testnet, TestnetError};

/// One rate's figures.
#[derive(Debug, Clone)]
pub struct AuditFigures {
    /// The policy's audit rate (millionths).
    pub rate_millionths: u32,
    /// Steps committed.
    pub steps: u64,
    /// Records committed.
    pub records: u64,
    /// Seconds per step (first committed step to the last).
    pub wall_per_step: f64,
    /// Per node: (authority, role, CPU seconds per step) over the same span.
    pub cpu_per_step: Vec<(String, String, f64)>,
    /// The operator's tuner (this process): CPU seconds per step.
    pub tuner_cpu_per_step: f64,
}

/// User + system CPU seconds of process `pid` ("self" for this one).
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command's closing parenthesis: utime is the 14th
    // field of the line, stime the 15th.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Snapshots the nodes' CPU and the time at the first committed step and
/// at every later one.
struct Meter {
    pids: Vec<u32>,
    first: Option<(Instant, u64, Vec<f64>, f64)>,
    last: Option<(Instant, u64, Vec<f64>, f64)>,
}

impl Meter {
    fn snapshot(&self) -> (Vec<f64>, f64) {
        (
            self.pids
                .iter()
                .map(|p| cpu_seconds(&p.to_string()).unwrap_or(0.0))
                .collect(),
            cpu_seconds("self").unwrap_or(0.0),
        )
    }
}

impl Progress for Meter {
    fn update(&mut self, info: &ProgressInfo) {
        let (nodes, me) = self.snapshot();
        let at = (Instant::now(), info.step, nodes, me);
        if self.first.is_none() {
            self.first = Some(at);
        } else {
            self.last = Some(at);
        }
    }
}

/// Runs the campaign file `config`, cut to `steps` steps, at each rate.
pub fn run_audit(
    binary: &Path,
    config: &Path,
    steps: u64,
    rates: &[u32],
) -> Result<Vec<AuditFigures>, TestnetError> {
    let text = std::fs::read_to_string(config)
        .map_err(|e| TestnetError::Io(format!("{}: {e}", config.display())))?;
    let base = config.parent().unwrap_or(Path::new("."));
    let base = std::fs::canonicalize(base).map_err(|e| TestnetError::Io(e.to_string()))?;
    let mut out = Vec::new();
    for &rate in rates {
        let dir = std::env::temp_dir().join(format!("govtune-bench-audit-{}-{rate}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| TestnetError::Io(format!("{}: {e}", dir.display())))?;
        let file = dir.join("campaign.toml");
        std::fs::write(&file, cut(&text, &base, steps, rate)).map_err(|e| TestnetError::Io(e.to_string()))?;
        let net = dir.join("net");
        let mut t = Testnet::create(&net, 4, binary, &NodeSettings::default())?;
        t.start_all()?;
        let run = (|| {
            t.wait_all_healthy(Duration::from_secs(120))?;
            let mut meter = Meter {
                pids: t.nodes.iter().map(|n| n.pid.unwrap_or(0)).collect(),
                first: None,
                last: None,
            };
            let outcome = crate::campaign::run_on_testnet(&file, &net, &mut meter)?;
            let (Some((t0, s0, n0, m0)), Some((t1, s1, n1, m1))) = (meter.first, meter.last) else {
                return Err(TestnetError::Run("fewer than two steps committed".into()));
            };
            let span = (s1 - s0).max(1) as f64;
            Ok(AuditFigures {
                rate_millionths: rate,
                steps: outcome.steps,
                records: outcome.entries,
                wall_per_step: t1.duration_since(t0).as_secs_f64() / span,
                cpu_per_step: t
                    .nodes
                    .iter()
                    .zip(n0.iter().zip(&n1))
                    .map(|(n, (a, b))| (n.authority.clone(), n.role.clone(), (b - a) / span))
                    .collect(),
                tuner_cpu_per_step: (m1 - m0) / span,
            })
        })();
        let _ = t.down();
        let _ = std::fs::remove_dir_all(&dir);
        out.push(run?);
    }
    Ok(out)
}

/// The campaign file cut to `steps` steps, its paths made absolute, its
/// policy auditing at `rate`.
fn cut(text: &str, base: &Path, steps: u64, rate: u32) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let l = line.trim_start();
        let abs = |key: &str| {
            l.strip_prefix(key)
                .and_then(|r| r.strip_prefix('"'))
                .map(|r| format!("{key}\"{}/{r}", base.display()))
        };
        let line = if l.starts_with("max_steps") {
            format!("max_steps = {steps}")
        } else if let Some(x) = abs("path = ")
            .or_else(|| abs("base_weights = "))
            .or_else(|| abs("probe = "))
        {
            x
        } else {
            line.to_string()
        };
        out.push_str(&line);
        out.push('\n');
        if l.starts_with("signature_scheme") {
            out.push_str(&format!(
                "\n[policy.audit]\nrate_millionths = {rate}\nexample_tolerance = 0.004\n"
            ));
        }
    }
    out
}
