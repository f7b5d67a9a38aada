//! The demo's steps that stand alone: killing and restarting a node and
//! measuring its catch-up, revoking a source, waiting for a certified
//! checkpoint.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lightclient::Client;
use provenance::{Revocation, Timestamp};
use roles::now_ms;
use tuner::data::SignedSource;

use roles::progress::BarProgress;
use tuner::campaign::{Progress, ProgressInfo};

use super::{CatchUp, Sample};
use crate::campaign::node_of;
use crate::Testnet;
use crate::TestnetError;

/// The progress hook's chaos: SIGKILLs node `kill_node` (named `name`) when
/// called, restarts it 5 s later from another thread and records in
/// `catch_up` how long it took to reach the height the others had then.
pub(super) fn kill_and_restart(
    t: Arc<Mutex<Testnet>>,
    catch_up: Arc<Mutex<CatchUp>>,
    reader: Client,
    kill_node: usize,
    name: String,
) -> impl FnOnce(u64) + Send {
    move |attempt: u64| {
        let height = |c: &Client| c.health().map_or(0, |h| h.height);
        let at_kill = height(&reader);
        let killed = t.lock().map(|mut t| t.kill(kill_node)).is_ok_and(|r| r.is_ok());
        if !killed {
            return;
        }
        println!("\n  SIGKILL {name} at attempt {attempt} (height {at_kill})");
        let killed_at = Instant::now();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(5));
            let Ok(mut g) = t.lock() else { return };
            let target = height(&reader);
            let restarted = Instant::now();
            if g.restart(kill_node).is_err() {
                return;
            }
            let client = g.client(kill_node);
            drop(g);
            let mut c = CatchUp {
                node: name.clone(),
                killed_at_attempt: attempt,
                down_s: restarted.duration_since(killed_at).as_secs_f64(),
                height_at_kill: at_kill,
                target_height: target,
                caught_up_s: f64::NAN,
            };
            while restarted.elapsed() < Duration::from_secs(120) {
                if height(&client) >= target {
                    c.caught_up_s = restarted.elapsed().as_secs_f64();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            println!(
                "\n  {name} restarted after {:.1} s down, while the others finalised {} (heartbeat) blocks; it replayed its store and synced to height {target} {:.2} s after its process started (its authority's co-signatures held the campaign meanwhile)",
                c.down_s,
                target.saturating_sub(at_kill),
                c.caught_up_s
            );
            if let Ok(mut g) = catch_up.lock() {
                *g = c;
            }
        });
    }
}

pub(super) fn indent(s: &str) -> String {
    s.lines().map(|l| format!("  {l}\n")).collect()
}

/// Revokes `s` through its rights-holder's node; returns when the
/// revocation took effect (its block's stamp).
pub(super) fn revoke(
    t: &Testnet,
    reader: &Client,
    s: &SignedSource,
    reason: &str,
) -> Result<Timestamp, TestnetError> {
    let id = s.manifest.source_id();
    let node = node_of(t, s.manifest.authority.as_str())?;
    let r = Revocation {
        version: 1,
        authority: s.manifest.authority.clone(),
        source: id,
        reason: reason.into(),
        requested: Timestamp(now_ms()),
    };
    let d = t.admin(node)?.submit("/v1/revocations", &r)?.digest;
    reader.wait_committed(&[d], Duration::from_secs(120))?;
    reader
        .source(&id)?
        .revoked
        .ok_or_else(|| TestnetError::Run(format!("source {} does not show its revocation", id.short())))
}

/// Waits until the latest checkpoint covers `size` entries; returns its
/// height.
pub(super) fn wait_certified(node: &Client, size: u64) -> Result<u64, TestnetError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let cp = node.checkpoint(None)?;
        if cp.size >= size {
            return Ok(cp.height);
        }
        if Instant::now() > deadline {
            return Err(TestnetError::Run(format!(
                "no checkpoint covers {size} entries after 60 s"
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The fine-tune's progress: the bar, the samples, and the chaos.
pub(super) struct DemoProgress {
    pub(super) bar: BarProgress,
    pub(super) samples: Vec<Sample>,
    pub(super) kill_at: u64,
    pub(super) chaos: Option<Box<dyn FnOnce(u64) + Send>>,
}

impl Progress for DemoProgress {
    fn update(&mut self, i: &ProgressInfo) {
        self.bar.update(i);
        self.samples.push(Sample {
            t: i.elapsed,
            step: i.step,
            attempts: i.attempts,
            loss: i.loss,
            events: i.events,
            rolled_back: i.rolled_back,
        });
        if i.attempts >= self.kill_at {
            if let Some(f) = self.chaos.take() {
                f(i.attempts);
            }
        }
    }
}
