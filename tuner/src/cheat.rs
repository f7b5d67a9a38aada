//! Test-only: an operator that cheats (feature `cheat`). With
//! `GOVTUNE_CHEAT=<mode>[,<mode>...]` the tuner ships one dishonest event at step
//! `GOVTUNE_CHEAT_STEP` (default 2, so that honest events committed
//! before it): the co-signers' checks must refuse it.
//!
//! Modes: `routed_out` (the delta also changes a piece no admitted example
//! may reach, the measurement and state made to match it), `under_norm`
//! (a block's norm halved), `replay` (the previous committed event offered
//! again under the next link), `memorisation` (a step whose recorded
//! signal exceeds the policy's threshold offered instead of rolled back),
//! `skip` (an admissible example drawn at that step neither trained nor
//! refused), `inflate` (the first refusal aggregate from that step on
//! counts one refusal more), `own_seed` (the whole order drawn from a seed
//! the operator picks instead of the consortium's checkpoint).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use provenance::{EntryBody, ExampleRecord, PolicyArtifact};

use crate::blobs::PieceDelta;
use crate::lora::AdapterLayout;

/// A way to cheat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Update a routed-out piece.
    RoutedOut,
    /// Under-report a block's norm.
    UnderNorm,
    /// Re-offer the previous event under the next link.
    Replay,
    /// Keep a step whose memorisation signal breaks the policy.
    Memorisation,
    /// Leave an admissible drawn example untrained and unrefused.
    Skip,
    /// Count one refusal more in an aggregate.
    Inflate,
    /// Draw the order from the operator's own seed.
    OwnSeed,
}

/// The configured cheats, whatever their step.
pub fn modes() -> Vec<Mode> {
    let v = std::env::var("GOVTUNE_CHEAT").unwrap_or_default();
    v.split(',')
        .filter_map(|m| {
            Some(match m.trim() {
                "routed_out" => Mode::RoutedOut,
                "under_norm" => Mode::UnderNorm,
                "replay" => Mode::Replay,
                "memorisation" => Mode::Memorisation,
                "skip" => Mode::Skip,
                "inflate" => Mode::Inflate,
                "own_seed" => Mode::OwnSeed,
                _ => return None,
            })
        })
        .collect()
}

/// Whether cheat `m` is configured.
pub fn on(m: Mode) -> bool {
    modes().contains(&m)
}

fn cheat_step() -> u64 {
    std::env::var("GOVTUNE_CHEAT_STEP")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2)
}

/// The cheat configured for the step or event starting at `step`, if any
/// (the first listed of those that act on one step).
pub fn at(step: u64) -> Option<Mode> {
    if step != cheat_step() {
        return None;
    }
    modes()
        .into_iter()
        .find(|m| !matches!(m, Mode::Inflate | Mode::OwnSeed))
}

static FIRED: AtomicBool = AtomicBool::new(false);

/// Whether `mode` is configured and fires now: the first time it is asked
/// at a step at or after the cheat step.
pub fn first_from(m: Mode, step: u64) -> bool {
    on(m) && step >= cheat_step() && !FIRED.swap(true, Ordering::SeqCst)
}

static LAST: Mutex<Option<EntryBody>> = Mutex::new(None);

/// Remembers the last committed event (for `replay`).
pub fn committed(body: &EntryBody) {
    if body.event().is_some() {
        *LAST.lock().unwrap_or_else(|p| p.into_inner()) = Some(body.clone());
    }
}

/// The last committed event.
pub fn last() -> Option<EntryBody> {
    LAST.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Adds a change to a piece none of `records` is routed to.
pub fn touch_routed_out(
    layout: &AdapterLayout,
    heads: usize,
    records: &[ExampleRecord],
    deltas: &mut Vec<PieceDelta>,
) {
    let out = layout.pieces.iter().position(|p| {
        !records.iter().any(|r| {
            let m = &r.decision.routing;
            m.allows(p.unit(m.granularity, heads))
        })
    });
    if let Some(i) = out {
        let mut xor = vec![0u32; layout.pieces[i].len()];
        xor[0] = 1 << 20;
        deltas.retain(|d| d.piece as usize != i);
        deltas.push(PieceDelta { piece: i as u32, xor });
        deltas.sort_by_key(|d| d.piece);
    }
}

/// A memorisation signal just above the policy's extraction threshold.
pub fn over_threshold(policy: &PolicyArtifact) -> f32 {
    policy.memorisation.extraction + 0.05
}
