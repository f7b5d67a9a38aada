//! Tracing scores over logged gradient sketches (issue 7): pure functions,
//! no I/O, deterministic to the bit.
//!
//! # Inputs
//!
//! * The **query gradients**: the projected gradient (same campaign
//!   projection, all pieces) of the query's output given its prompt, on the
//!   model at each recorded checkpoint (`Campaign::checkpoint_steps`, the
//!   snapshot blobs), optionally at step 0 (the initial adapters, which
//!   anyone can recompute from the sketch seed), and on the final model
//!   ([`crate::trace::project_text_gradient`], [`crate::trace::query_gradients`]).
//! * The **logged examples** ([`LoggedExample`]): each admitted example's
//!   sketch from the sketch blobs (source, example index, step), the event
//!   it was logged in and its routing mask from the event's record
//!   ([`logged_examples`] joins the two).
//! * The **learning rate** per step ([`LrSchedule`]).
//!
//! # Scores
//!
//! Coordinates are grouped by parameter block (layer `l`: attention `2l`,
//! MLP `2l + 1`) through the adapter layout's pieces (`s²` coordinates per
//! piece). An example contributes **only on the pieces its routing mask let
//! it reach**: the scorer masks them explicitly (the stored sketch is
//! already zero there; masking makes the restriction a property of the
//! scorer, not of the blob's contents).
//!
//! * [`Method::TracIn`]: `τ(q, z) = η_t · ⟨g_q(θ_c), g_z(θ_t)⟩` over the
//!   routed pieces, with `t` the step `z` trained in, `g_z(θ_t)` its
//!   logged sketch (the gradient at the state it actually trained on) and
//!   `c` the recorded query checkpoint nearest to `t` (ties go to the
//!   earlier one). Ideal TracIn sums `η_t ⟨g_q(θ_t), g_z(θ_t)⟩` over the
//!   steps `z` trained in; the approximation is `g_q(θ_t) ≈ g_q(θ_c)`,
//!   exact when a checkpoint is kept at every step. The clip factor and
//!   AdamW's preconditioning of the applied update are not modelled (the
//!   sketch is the unclipped gradient); `η_t` is the configured rate. The
//!   default ([`Method::tracin`]) is a cosine within each example's routed
//!   pieces with the dominant directions of the logged sketches projected
//!   out ([`Preconditioner::fit_common`]); [`Method::tracin_cosine`] is the
//!   plain cosine.
//! * [`Method::Trak`]: `g_qᵀ (Φ_bᵀ Φ_b + λ_b I)⁻¹ g_z` summed over blocks
//!   `b`, with `g_q` the query gradient at the **last** (final-model) query
//!   checkpoint, `Φ_b` the matrix of every logged example's routed block-`b`
//!   sketch and `λ_b = λ · tr(Φ_bᵀ Φ_b) / d_b` (`λ` relative to the mean
//!   eigenvalue; default [`DEFAULT_TRAK_LAMBDA`]). The preconditioner is
//!   block-diagonal by parameter block (a K-FAC-like simplification that
//!   keeps routing restrictions block-local and the solve cheap); it does
//!   not depend on the query, so [`Preconditioner::fit`] once per campaign
//!   and reuse it.
//!
//! # Determinism
//!
//! Examples are put in canonical order (step, source, index, event) before
//! scoring, all arithmetic is sequential `f64` over `f32` inputs, and ties
//! in rankings break on the key. The same inputs in any order give the same
//! [`TraceReport`] bit for bit ([`TraceReport::digest`]); a verifier who
//! recomputes the query gradients from the model and snapshot blobs and
//! decodes the sketch blobs calls the same functions.

mod coords;
mod inputs;
mod linalg;
mod method;
mod precondition;
mod report;
mod scoring;
#[cfg(test)]
mod tests;

pub use coords::BlockCoords;
pub use inputs::{logged_examples, LoggedExample, LrSchedule, QueryGradient};
pub use method::{Method, DEFAULT_COMMON_DIRECTIONS, DEFAULT_TRAK_LAMBDA};
pub use precondition::Preconditioner;
pub use report::{
    BlockScore, ExampleScore, KeyScore, Ranked, RankedSource, SourceScore, TraceReport, SALIENT_FRACTION,
};
pub use scoring::score;
