//! Test-only: an operator that cheats (feature `cheat`). With
//! `GOVTUNE_CHEAT=<mode>` the tuner ships one dishonest event at step
//! `GOVTUNE_CHEAT_STEP` (default 2, so that honest events committed
//! before it): the co-signers' checks must refuse it.
//!
//! Modes: `routed_out` (the delta also changes a piece no admitted example
//! may reach, the measurement and state made to match it), `under_norm`
//! (a block's norm halved), `replay` (the previous committed event offered
//! again under the next link), `memorisation` (a step whose recorded
//! signal exceeds the policy's threshold offered instead of rolled back).

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
}

/// The cheat configured for the event starting at `step`, if any.
pub fn at(step: u64) -> Option<Mode> {
    let mode = match std::env::var("GOVTUNE_CHEAT").ok()?.as_str() {
        "routed_out" => Mode::RoutedOut,
        "under_norm" => Mode::UnderNorm,
        "replay" => Mode::Replay,
        "memorisation" => Mode::Memorisation,
        _ => return None,
    };
    let at = std::env::var("GOVTUNE_CHEAT_STEP")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    (step == at).then_some(mode)
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
