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
//!
//! Replay-only cheats, which only recomputing the step shows
//! ([`crate::replay`]): `no_clip` (the update is not clipped, the
//! measurement stated consistently with it), `forge_sketch` (the first
//! example's sketch scaled), `hide_signal` (the memorisation signals
//! hidden: the step is kept whatever they say, and its record states a
//! loss-drop z-score one lower than measured, extraction and exposure zero). `GOVTUNE_CHEAT_WHEN` says on which steps they act:
//! `at` (the cheat step only, the default), `every` (every step from it),
//! `guess` (the steps from it the operator guesses are not audited: it
//! cannot compute the tickets, so it guesses half of them). With `vary` in
//! the list, a re-offered cheating step differs from the refused one (the
//! forged sketch's scale follows the attempt count). A test sets the same
//! plan for its own thread with [`set_plan`].

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
    /// Train without the per-example clip.
    NoClip,
    /// Scale an example's sketch.
    ForgeSketch,
    /// Hide the memorisation signals: keep the step, state them lower.
    HideSignal,
    /// Re-offer a refused cheating step varied.
    Vary,
}

/// On which steps the replay-only cheats act.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// The cheat step only.
    At,
    /// Every step from the cheat step.
    Every,
    /// The steps from the cheat step it guesses are not audited.
    Guess,
}

/// A cheating plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The modes.
    pub modes: Vec<Mode>,
    /// The cheat step.
    pub step: u64,
    /// When the replay-only modes act.
    pub when: When,
    /// Steps it no longer cheats at (a test's cheater giving up on a
    /// position after refusals).
    pub spare: std::collections::BTreeSet<u64>,
}

thread_local! {
    static PLAN: std::cell::RefCell<Option<Plan>> = const { std::cell::RefCell::new(None) };
}

/// Sets (or clears) this thread's plan, which takes the place of the
/// environment's.
pub fn set_plan(plan: Option<Plan>) {
    PLAN.with(|p| *p.borrow_mut() = plan);
}

fn plan() -> Plan {
    if let Some(p) = PLAN.with(|p| p.borrow().clone()) {
        return p;
    }
    let when = match std::env::var("GOVTUNE_CHEAT_WHEN").as_deref() {
        Ok("every") => When::Every,
        Ok("guess") => When::Guess,
        _ => When::At,
    };
    Plan {
        modes: env_modes(),
        step: env_step(),
        when,
        spare: Default::default(),
    }
}

static FORGED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The scale of the next forged sketch: 1.5, and with `vary` 0.1 more on
/// every forgery, so a re-offer differs from the refused offer.
pub fn forge_scale() -> f32 {
    let n = FORGED.fetch_add(1, Ordering::SeqCst);
    if on(Mode::Vary) {
        1.5 + 0.1 * (n % 64) as f32
    } else {
        1.5
    }
}

/// Whether the operator guesses step `step` is not audited (half of the
/// steps, by a hash it can compute; the tickets it cannot).
pub fn guessed_unaudited(step: u64) -> bool {
    use sha3::{Digest as _, Sha3_256};
    Sha3_256::digest([b"govtune-cheat guess".as_slice(), &step.to_be_bytes()].concat())[0] & 1 == 0
}

/// The replay-only cheats acting at `step`.
pub fn replay_cheats(step: u64) -> Vec<Mode> {
    let p = plan();
    let acts = match p.when {
        When::At => step == p.step,
        When::Every => step >= p.step,
        When::Guess => step >= p.step && guessed_unaudited(step),
    };
    if !acts || p.spare.contains(&step) {
        return Vec::new();
    }
    p.modes
        .into_iter()
        .filter(|m| matches!(m, Mode::NoClip | Mode::ForgeSketch | Mode::HideSignal))
        .collect()
}

/// The configured cheats, whatever their step.
pub fn modes() -> Vec<Mode> {
    plan().modes
}

fn env_modes() -> Vec<Mode> {
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
                "no_clip" => Mode::NoClip,
                "forge_sketch" => Mode::ForgeSketch,
                "hide_signal" => Mode::HideSignal,
                "vary" => Mode::Vary,
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
    plan().step
}

fn env_step() -> u64 {
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
    modes().into_iter().find(|m| {
        !matches!(
            m,
            Mode::Inflate | Mode::OwnSeed | Mode::NoClip | Mode::ForgeSketch | Mode::HideSignal | Mode::Vary
        )
    })
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
