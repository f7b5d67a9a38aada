//! Fine-tune a small transformer under governance: admission, depth
//! profiles, gradient routing, measurement, memorisation rollback and
//! gradient sketches, on candle.
//!
//! # The step pipeline
//!
//! [`campaign::Session`] takes one step at a time:
//!
//! 1. **Admission.** The next batch comes from a seeded per-epoch
//!    permutation of every example of every source. Each example's source
//!    goes through `provenance::admit` (signature, revocation, validity
//!    window, license, purpose, depth), the same code governance re-runs.
//!    Refused examples become `Refusal`s or, when the policy allows,
//!    per-(source, reason) `RefusalAggregate`s.
//! 2. **One batched forward and backward pass.** The base weights are
//!    frozen; every adapted projection adds a LoRA term. Each LoRA matrix
//!    product ("site") records its input `X` and adds a zero probe
//!    variable to its output; the loss is the *sum* of per-example mean
//!    losses, so the probe's gradient `G` holds each example's own output
//!    gradient ([`pergrad`]).
//! 3. **Depth profile and routing.** The admission decision of each example
//!    carries a routing mask (block, layer or head units, already limited
//!    by the class's depth) and a clip norm. Per-example gradient norms
//!    come from `X` and `G` (ghost norms via Gram matrices when cheaper);
//!    the clip factor is computed per (example, parameter block) over the
//!    routed pieces only, and the applied gradient is one weighted matmul
//!    `(w ⊙ G)ᵀ X`. A piece no example routes to has no gradient at all.
//! 4. **AdamW** ([`optim`]) skips pieces without gradient entirely (no
//!    moment decay, no weight decay), so routed-out parameters are
//!    bit-identical across the step.
//! 5. **Measurement**: per parameter block the digest of its XOR delta and
//!    the L2 norm of its change, the optimizer-state digest, the
//!    model-state digest, the loss.
//! 6. **Memorisation signals** ([`memo`]): loss-drop z-score against a
//!    held-out probe set, exact greedy extraction of a held-back
//!    continuation, canary exposure. If one exceeds its policy threshold,
//!    parameters, optimizer moments, step counter **and the RNG** are
//!    restored and a `Refusal` (reason memorisation) carrying the
//!    measurement is emitted. The RNG (adapter dropout) is restored so that
//!    the state after a refused step is bit-identical to the state before
//!    it: replaying only the committed record reproduces the model. The
//!    data cursor is not rolled back (a refused example is consumed, not
//!    retried forever).
//! 7. **Event**: a `StepEvent` per example or per batch, a `CompositeEvent`
//!    per batch (composite batching) or per epoch, with a sketch blob (one
//!    projected gradient per admitted example) and a delta blob (XOR of
//!    every changed piece) whose digests the event carries. If a co-signer
//!    refuses an entry, the session returns to its last committed state
//!    and [`campaign::Session::run`] can be called again to resume.
//!
//! # Design choices
//!
//! * **Per-head LoRA.** Attention adapters are per head (`A_h`, `B_h` for
//!   Q, K, V writing head `h`'s slice; O's `A_h` reading it), so every
//!   routing unit owns whole tensors ([`lora`]); head routing needs no
//!   element masks.
//! * **LoGra sketches.** With fixed random `P_out`, `P_in` per piece, an
//!   example's projected gradient is `(G_i P_outᵀ)ᵀ (X_i P_inᵀ)`: an
//!   `[s, s]` block from projected activations and gradients, never the
//!   full per-example gradient. Format: `docs/sketches.md`.
//! * **Host-side state.** Adapters and moments are plain `Vec<f32>`, so
//!   XOR deltas, digests, rollback and snapshots are exact byte
//!   operations; candle does the tensor maths.
//! * **Determinism.** Seeds fix initialisation, data order, dropout and
//!   projections; candle's CPU matmul splits work across threads but not
//!   along the reduction, and the tests check that two runs give the same
//!   model digest.
//!
//! The node's CLI calls [`campaign::run`] (or [`campaign::Session`]) with
//! its own [`sink::EventSink`]; `govtune-tuner` uses [`sink::FileSink`].
//!
//! # Tracing
//!
//! [`score`] scores a query against the logged sketches (TracIn over
//! recorded checkpoints, a TRAK-style preconditioned score; routing-
//! restricted; per example, source, event, step and parameter block;
//! bit-deterministic) and [`trace::TraceContext`] is the entry point of the
//! node's trace endpoint and of a verifier's recomputation. [`eval`]
//! measures it (canaries, retraining ground truth; `docs/tracing.md`;
//! feature `eval`, on by default, off in the node's daemon).
#![deny(missing_docs)]

pub mod auditor;
#[cfg(feature = "eval")]
pub mod bench;
pub mod blobs;
pub mod campaign;
#[cfg(feature = "cheat")]
pub mod cheat;
pub mod compute;
pub mod data;
pub mod demo;
pub mod error;
#[cfg(feature = "eval")]
pub mod eval;
pub mod lora;
pub mod material;
pub mod memo;
pub mod model;
pub mod optim;
pub mod package;
pub mod pergrad;
pub mod pretrain;
pub mod rebuild;
pub mod recipe;
pub mod record;
pub mod replay;
pub mod score;
pub mod sink;
pub mod trace;
pub mod witness;

pub use error::{Result, TunerError};
