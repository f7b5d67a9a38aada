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

use std::collections::BTreeMap;

use provenance::digest::{tagged_hash_parts, ObjectKind};
use provenance::{Digest, ExampleRecord, RoutingMask};

use crate::blobs::SketchRecord;
use crate::error::{Result, TunerError};
use crate::lora::AdapterLayout;

/// Share of the highest-scoring examples whose excess makes a source's
/// salient score ([`SourceScore::salient`]).
pub const SALIENT_FRACTION: f64 = 0.01;

/// Dominant directions of the logged sketches that the default TracIn
/// projects out ([`Method::TracIn`] `common`).
pub const DEFAULT_COMMON_DIRECTIONS: usize = 2;

/// Default relative damping of the TRAK-style score.
pub const DEFAULT_TRAK_LAMBDA: f64 = 0.1;

/// The scoring method.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Method {
    /// Learning-rate-weighted gradient dot products at the nearest
    /// recorded checkpoint.
    TracIn {
        /// Unit-normalise each example's routed sketch and each query
        /// gradient (cosine similarity).
        unit: bool,
        /// Divide each example sketch coordinate by its root mean square
        /// over the logged examples (routed ones), as Adam divides the
        /// update by `√v`: the score then follows the applied update, not
        /// the raw gradient. Needs [`Preconditioner::fit_adam`].
        adam: bool,
        /// With `unit`: normalise the query over the pieces each example
        /// was routed to (the cosine within the subspace the example could
        /// reach), not over all pieces. Without it an example routed to
        /// few pieces scores at most `‖q_routed‖ / ‖q‖`, so restricted
        /// sources rank low whatever their content.
        routed: bool,
        /// With `unit`: project the `common` dominant directions of the
        /// logged examples' unit sketches out of the query and of every
        /// example before the cosine (needs [`Preconditioner::fit_common`]).
        /// Directions shared by most examples (generic next-token
        /// gradients, the shared format of similar texts) say little about
        /// which example a query comes from; 0: none.
        common: usize,
    },
    /// Final-model query gradient preconditioned by the damped inverse
    /// Gram matrix of the logged sketches (block-diagonal).
    Trak {
        /// Damping relative to the mean eigenvalue of each block's Gram
        /// matrix (must be positive).
        lambda: f64,
        /// Unit-normalise each example's routed sketch (in the Gram
        /// matrix and in the score) and the query gradient.
        unit: bool,
    },
}

impl Method {
    /// The default TracIn: cosine within each example's routed pieces,
    /// with the [`DEFAULT_COMMON_DIRECTIONS`] dominant directions of the
    /// logged sketches projected out (needs [`Preconditioner::fit_common`]).
    pub fn tracin() -> Self {
        Method::TracIn {
            unit: true,
            adam: false,
            routed: true,
            common: DEFAULT_COMMON_DIRECTIONS,
        }
    }

    /// TracIn with unit-normalised gradients over all pieces (plain cosine,
    /// the default before the routed and common-direction corrections).
    pub fn tracin_cosine() -> Self {
        Method::TracIn {
            unit: true,
            adam: false,
            routed: false,
            common: 0,
        }
    }

    /// TracIn with Adam-normalised, unit-normalised example sketches
    /// (needs [`Preconditioner::fit_adam`]).
    pub fn tracin_adam() -> Self {
        Method::TracIn {
            unit: true,
            adam: true,
            routed: false,
            common: 0,
        }
    }

    /// TRAK with [`DEFAULT_TRAK_LAMBDA`] and unit-normalised gradients
    /// (the default).
    pub fn trak() -> Self {
        Method::Trak {
            lambda: DEFAULT_TRAK_LAMBDA,
            unit: true,
        }
    }

    /// The methods a trace can be asked for by name, the default first.
    pub fn selectable() -> [Method; 4] {
        [
            Method::tracin(),
            Method::tracin_cosine(),
            Method::tracin_adam(),
            Method::trak(),
        ]
    }

    /// A selectable method by its [`Method::name`].
    pub fn by_name(name: &str) -> Option<Method> {
        Method::selectable().into_iter().find(|m| m.name() == name)
    }

    /// Short name (`tracin`, `tracin-adam`, `tracin-routed-common`, ...,
    /// `tracin-adam-dot`, `tracin-raw`, `trak`, `trak-raw`).
    pub fn name(&self) -> &'static str {
        match *self {
            Method::TracIn {
                unit: false,
                adam: true,
                ..
            } => "tracin-adam-dot",
            Method::TracIn {
                unit: false,
                adam: false,
                ..
            } => "tracin-raw",
            Method::TracIn {
                adam, routed, common, ..
            } => match (adam, routed, common > 0) {
                (false, false, false) => "tracin",
                (true, false, false) => "tracin-adam",
                (false, true, false) => "tracin-routed",
                (true, true, false) => "tracin-adam-routed",
                (false, false, true) => "tracin-common",
                (true, false, true) => "tracin-adam-common",
                (false, true, true) => "tracin-routed-common",
                (true, true, true) => "tracin-adam-routed-common",
            },
            Method::Trak { unit: true, .. } => "trak",
            Method::Trak { unit: false, .. } => "trak-raw",
        }
    }

    fn unit(&self) -> bool {
        match self {
            Method::TracIn { unit, .. } | Method::Trak { unit, .. } => *unit,
        }
    }

    fn adam(&self) -> bool {
        matches!(self, Method::TracIn { adam: true, .. })
    }

    fn common(&self) -> usize {
        match self {
            Method::TracIn {
                unit: true, common, ..
            } => *common,
            _ => 0,
        }
    }

    fn routed(&self) -> bool {
        matches!(
            self,
            Method::TracIn {
                unit: true,
                routed: true,
                ..
            }
        )
    }
}

/// The learning rate applied at each step.
#[derive(Debug, Clone, PartialEq)]
pub enum LrSchedule {
    /// The same rate at every step.
    Constant(f32),
    /// Rate of step `t` at index `t`.
    PerStep(Vec<f32>),
}

impl LrSchedule {
    /// The rate at `step`.
    pub fn at(&self, step: u64) -> Result<f32> {
        match self {
            LrSchedule::Constant(lr) => Ok(*lr),
            LrSchedule::PerStep(v) => usize::try_from(step)
                .ok()
                .and_then(|i| v.get(i))
                .copied()
                .ok_or_else(|| TunerError::Config(format!("no learning rate for step {step}"))),
        }
    }
}

/// The query's projected gradient on the model after `step` committed
/// steps.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryGradient {
    /// Committed steps of the model state (0: initial adapters).
    pub step: u64,
    /// Sketch coordinates (the campaign projection, all pieces).
    pub values: Vec<f32>,
}

/// One logged example: its sketch and where it was logged.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedExample {
    /// Source id.
    pub source: Digest,
    /// Example index in the source.
    pub index: u64,
    /// Training step.
    pub step: u64,
    /// The caller's key of the event that logged it (e.g. its chain
    /// sequence number).
    pub event: u64,
    /// Routing mask of its admission decision (`None`: every piece).
    pub routing: Option<RoutingMask>,
    /// Sketch coordinates.
    pub values: Vec<f32>,
}

/// Joins a sketch blob's records with the event's example records (same
/// order, as the tuner writes them) into [`LoggedExample`]s.
pub fn logged_examples(
    event: u64,
    sketches: Vec<SketchRecord>,
    records: &[ExampleRecord],
) -> Result<Vec<LoggedExample>> {
    if sketches.len() != records.len() {
        return Err(TunerError::Blob {
            kind: "sketch",
            reason: format!(
                "{} sketches for {} example records",
                sketches.len(),
                records.len()
            ),
        });
    }
    sketches
        .into_iter()
        .zip(records)
        .map(|(s, r)| {
            if s.source != r.source || s.index != r.index {
                return Err(TunerError::Blob {
                    kind: "sketch",
                    reason: format!("sketch of example {} does not match the event's record", s.index),
                });
            }
            Ok(LoggedExample {
                source: s.source,
                index: s.index,
                step: s.step,
                event,
                routing: Some(r.decision.routing.clone()),
                values: s.values,
            })
        })
        .collect()
}

/// One example's score.
#[derive(Debug, Clone, PartialEq)]
pub struct ExampleScore {
    /// Source id.
    pub source: Digest,
    /// Example index.
    pub index: u64,
    /// Training step.
    pub step: u64,
    /// Event key.
    pub event: u64,
    /// Score (sum over blocks).
    pub score: f64,
}

/// A source's summed score.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceScore {
    /// Source id.
    pub source: Digest,
    /// Sum of its examples' scores.
    pub score: f64,
    /// Sum of its examples' excess over the query's salient threshold
    /// (the score at rank `max(2, ⌈SALIENT_FRACTION · n⌉)` among all `n`
    /// examples): the part of the source that stands out for this query,
    /// not its diffuse share of every query.
    pub salient: f64,
    /// Examples scored.
    pub examples: u64,
    /// Score per parameter block (index = block).
    pub blocks: Vec<f64>,
}

/// An event's (or step's) summed score.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyScore {
    /// Event key or step.
    pub key: u64,
    /// Sum of its examples' scores.
    pub score: f64,
    /// Examples scored.
    pub examples: u64,
}

/// A parameter block's part of the total score.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockScore {
    /// Block (layer `l`: attention `2l`, MLP `2l + 1`).
    pub block: u32,
    /// Sum over examples of their block-restricted scores.
    pub score: f64,
    /// `|score| / Σ_b |score_b|`.
    pub share: f64,
}

/// The scores of one query.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceReport {
    /// The method.
    pub method: Method,
    /// Per example, in canonical order (step, source, index, event).
    pub examples: Vec<ExampleScore>,
    /// Per source, highest score first.
    pub sources: Vec<SourceScore>,
    /// The salient threshold (see [`SourceScore::salient`]).
    pub salient_threshold: f64,
    /// Per event, highest score first.
    pub events: Vec<KeyScore>,
    /// Per step, in step order.
    pub steps: Vec<KeyScore>,
    /// Per parameter block, largest share first.
    pub blocks: Vec<BlockScore>,
}

impl TraceReport {
    /// Digest of the report's canonical bytes (every score's `f64` bits):
    /// two reports are bit-identical iff their digests are equal.
    pub fn digest(&self) -> Digest {
        let mut b = Vec::new();
        b.extend_from_slice(self.method.name().as_bytes());
        if let Method::Trak { lambda, .. } = self.method {
            b.extend_from_slice(&lambda.to_bits().to_be_bytes());
        }
        if self.method.common() > 0 {
            b.extend_from_slice(&(self.method.common() as u64).to_be_bytes());
        }
        for e in &self.examples {
            b.extend_from_slice(&e.source.0);
            for v in [e.index, e.step, e.event, e.score.to_bits()] {
                b.extend_from_slice(&v.to_be_bytes());
            }
        }
        for s in &self.sources {
            b.extend_from_slice(&s.source.0);
            b.extend_from_slice(&s.score.to_bits().to_be_bytes());
            b.extend_from_slice(&s.salient.to_bits().to_be_bytes());
            b.extend_from_slice(&s.examples.to_be_bytes());
            for x in &s.blocks {
                b.extend_from_slice(&x.to_bits().to_be_bytes());
            }
        }
        for k in self.events.iter().chain(&self.steps) {
            for v in [k.key, k.score.to_bits(), k.examples] {
                b.extend_from_slice(&v.to_be_bytes());
            }
        }
        for x in &self.blocks {
            b.extend_from_slice(&x.block.to_be_bytes());
            b.extend_from_slice(&x.score.to_bits().to_be_bytes());
            b.extend_from_slice(&x.share.to_bits().to_be_bytes());
        }
        b.extend_from_slice(&self.salient_threshold.to_bits().to_be_bytes());
        tagged_hash_parts(ObjectKind::Blob, &[b"trace-report/v1", &b])
    }

    /// Sources by salient score, highest first (ties by plain score, then
    /// source id: most sources have salient score 0).
    pub fn sources_by_salient(&self) -> Vec<&SourceScore> {
        let mut v: Vec<&SourceScore> = self.sources.iter().collect();
        v.sort_by(|a, b| {
            b.salient
                .total_cmp(&a.salient)
                .then(b.score.total_cmp(&a.score))
                .then(a.source.cmp(&b.source))
        });
        v
    }

    /// The score of `source` (0 if it has no scored example).
    pub fn source_score(&self, source: &Digest) -> f64 {
        self.sources
            .iter()
            .find(|s| &s.source == source)
            .map_or(0.0, |s| s.score)
    }
}

/// Coordinates of the layout grouped by parameter block.
#[derive(Debug, Clone)]
pub struct BlockCoords {
    /// Sketch side `s`.
    pub side: usize,
    /// Per block, its pieces (ascending).
    pub pieces: Vec<Vec<usize>>,
    /// Piece → block.
    pub block_of: Vec<u32>,
    /// Per piece, its routing unit at each granularity (block, layer, head).
    units: Vec<[u32; 3]>,
}

impl BlockCoords {
    /// Groups the pieces of `layout` by block, for sketches of side `side`.
    pub fn new(layout: &AdapterLayout, side: usize) -> Self {
        let nb = layout.blocks();
        let heads = layout.model.heads;
        Self {
            side,
            pieces: (0..nb).map(|b| layout.block_pieces(b).collect()).collect(),
            block_of: layout.pieces.iter().map(|p| p.block()).collect(),
            units: layout
                .pieces
                .iter()
                .map(|p| {
                    use provenance::RoutingGranularity as G;
                    [
                        p.unit(G::Block, heads),
                        p.unit(G::Layer, heads),
                        p.unit(G::Head, heads),
                    ]
                })
                .collect(),
        }
    }

    /// Sketch dimension.
    pub fn dim(&self) -> usize {
        self.block_of.len() * self.side * self.side
    }

    /// Number of blocks.
    pub fn blocks(&self) -> usize {
        self.pieces.len()
    }

    /// Which pieces `routing` lets an example reach.
    pub fn piece_mask(&self, routing: Option<&RoutingMask>) -> Vec<bool> {
        match routing {
            None => vec![true; self.block_of.len()],
            Some(m) => {
                let g = match m.granularity {
                    provenance::RoutingGranularity::Block => 0,
                    provenance::RoutingGranularity::Layer => 1,
                    provenance::RoutingGranularity::Head => 2,
                };
                self.units.iter().map(|u| m.allows(u[g])).collect()
            }
        }
    }

    fn piece_range(&self, p: usize) -> std::ops::Range<usize> {
        let s2 = self.side * self.side;
        p * s2..(p + 1) * s2
    }

    /// Block-`b` coordinates of `v` over the pieces allowed by `mask`
    /// (zeros elsewhere), in the block's piece order.
    fn block_vec(&self, b: usize, v: &[f32], mask: &[bool]) -> Vec<f64> {
        let mut out = Vec::with_capacity(self.pieces[b].len() * self.side * self.side);
        for &p in &self.pieces[b] {
            let r = self.piece_range(p);
            if mask[p] {
                out.extend(v[r].iter().map(|&x| f64::from(x)));
            } else {
                out.extend(std::iter::repeat_n(0.0, r.len()));
            }
        }
        out
    }
}

/// The damped inverse Gram matrices of TRAK, one per parameter block, as
/// Cholesky factors.
#[derive(Debug, Clone)]
pub struct Preconditioner {
    /// Relative damping.
    pub lambda: f64,
    /// Whether the rows were unit-normalised.
    pub unit: bool,
    /// Per block: dimension and lower Cholesky factor (row-major); empty
    /// for an Adam preconditioner.
    factors: Vec<(usize, Vec<f64>)>,
    /// Per coordinate `1 / rms` (Adam preconditioner), empty for TRAK.
    diag: Vec<f64>,
    /// Orthonormal dominant directions of the unit example sketches
    /// (common-direction preconditioner), empty otherwise.
    common: Vec<Vec<f64>>,
}

impl Preconditioner {
    /// Fits `Φ_bᵀ Φ_b + λ_b I` for every block over `examples` (routed
    /// pieces only, each row divided by the example's routed norm when
    /// `unit`) and factors it.
    pub fn fit(coords: &BlockCoords, examples: &[LoggedExample], lambda: f64, unit: bool) -> Result<Self> {
        if !(lambda > 0.0 && lambda.is_finite()) {
            return Err(TunerError::Config("the TRAK damping must be positive".into()));
        }
        check_dims(coords, examples)?;
        let order = canonical_order(examples);
        let masks = MaskCache::new(coords, examples);
        let inv: Vec<f64> = examples
            .iter()
            .enumerate()
            .map(|(i, e)| inv_norm(coords, &e.values, masks.get(i), unit))
            .collect();
        let mut factors = Vec::with_capacity(coords.blocks());
        for b in 0..coords.blocks() {
            let d = coords.pieces[b].len() * coords.side * coords.side;
            let mut h = vec![0f64; d * d];
            for &i in &order {
                let e = &examples[i];
                let mut x = coords.block_vec(b, &e.values, masks.get(i));
                if unit {
                    x.iter_mut().for_each(|v| *v *= inv[i]);
                }
                for r in 0..d {
                    let xr = x[r];
                    if xr == 0.0 {
                        continue;
                    }
                    let row = &mut h[r * d..r * d + r + 1];
                    for (c, hv) in row.iter_mut().enumerate() {
                        *hv += xr * x[c];
                    }
                }
            }
            let tr: f64 = (0..d).map(|r| h[r * d + r]).sum();
            let damp = lambda * (tr / d as f64).max(f64::MIN_POSITIVE);
            for r in 0..d {
                h[r * d + r] += damp;
            }
            factors.push((d, cholesky(h, d)?));
        }
        Ok(Self {
            lambda,
            unit,
            factors,
            diag: Vec::new(),
            common: Vec::new(),
        })
    }

    /// The Adam-style diagonal for [`Method::TracIn`] with `adam`: per
    /// coordinate `1 / √(mean of v²)` over the examples routed to its
    /// piece (0 where every such value is 0).
    pub fn fit_adam(coords: &BlockCoords, examples: &[LoggedExample]) -> Result<Self> {
        check_dims(coords, examples)?;
        let order = canonical_order(examples);
        let masks = MaskCache::new(coords, examples);
        let d = coords.dim();
        let mut sq = vec![0f64; d];
        let mut n = vec![0u64; coords.block_of.len()];
        for &i in &order {
            let m = masks.get(i);
            for (p, &on) in m.iter().enumerate() {
                if on {
                    n[p] += 1;
                    for j in coords.piece_range(p) {
                        sq[j] += f64::from(examples[i].values[j]).powi(2);
                    }
                }
            }
        }
        let s2 = coords.side * coords.side;
        let diag = sq
            .iter()
            .enumerate()
            .map(|(j, &x)| {
                let k = n[j / s2];
                if x > 0.0 && k > 0 {
                    1.0 / (x / k as f64).sqrt()
                } else {
                    0.0
                }
            })
            .collect();
        Ok(Self {
            lambda: 0.0,
            unit: false,
            factors: Vec::new(),
            diag,
            common: Vec::new(),
        })
    }

    /// The `m` dominant directions (top right singular vectors) of the
    /// matrix whose rows are the logged examples' sketches, each restricted
    /// to its routed pieces and unit-normalised: the subspace shared by
    /// most examples, which [`Method::TracIn`] with `common = m` projects
    /// out. Subspace iteration from a fixed start (sequential `f64` in
    /// canonical example order, so deterministic to the bit); only the
    /// subspace matters, not the individual vectors.
    pub fn fit_common(coords: &BlockCoords, examples: &[LoggedExample], m: usize) -> Result<Self> {
        check_dims(coords, examples)?;
        let d = coords.dim();
        if m == 0 || m >= d {
            return Err(TunerError::Config(format!(
                "common directions must be in 1..{d}, not {m}"
            )));
        }
        let order = canonical_order(examples);
        let masks = MaskCache::new(coords, examples);
        let rows: Vec<Vec<f64>> = order
            .iter()
            .map(|&i| unit_routed(coords, &examples[i].values, masks.get(i)))
            .collect();
        // Fixed start: a deterministic pseudo-random basis (xorshift).
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut v: Vec<Vec<f64>> = (0..m)
            .map(|_| {
                (0..d)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
                    })
                    .collect()
            })
            .collect();
        orthonormalise(&mut v);
        for _ in 0..COMMON_ITERATIONS {
            let mut w = vec![vec![0f64; d]; m];
            for x in &rows {
                for (wk, vk) in w.iter_mut().zip(&v) {
                    let c: f64 = x.iter().zip(vk).map(|(a, b)| a * b).sum();
                    if c != 0.0 {
                        wk.iter_mut().zip(x).for_each(|(a, b)| *a += c * b);
                    }
                }
            }
            v = w;
            orthonormalise(&mut v);
        }
        Ok(Self {
            lambda: 0.0,
            unit: true,
            factors: Vec::new(),
            diag: Vec::new(),
            common: v,
        })
    }

    /// `(Φ_bᵀ Φ_b + λ_b I)⁻¹ q_b` for every block, concatenated per block.
    fn apply(&self, coords: &BlockCoords, q: &[f32]) -> Vec<Vec<f64>> {
        let all = vec![true; coords.block_of.len()];
        self.factors
            .iter()
            .enumerate()
            .map(|(b, (d, l))| solve_cholesky(l, *d, coords.block_vec(b, q, &all)))
            .collect()
    }
}

/// Subspace iterations of [`Preconditioner::fit_common`].
const COMMON_ITERATIONS: usize = 100;

/// `v` restricted to the pieces allowed by `mask` (zeros elsewhere) and
/// unit-normalised (all zeros if it is zero there).
fn unit_routed(coords: &BlockCoords, v: &[f32], mask: &[bool]) -> Vec<f64> {
    let s2 = coords.side * coords.side;
    let mut x: Vec<f64> = v
        .iter()
        .enumerate()
        .map(|(j, &y)| if mask[j / s2] { f64::from(y) } else { 0.0 })
        .collect();
    let n = x.iter().map(|y| y * y).sum::<f64>().sqrt();
    if n > 0.0 {
        x.iter_mut().for_each(|y| *y /= n);
    }
    x
}

/// Modified Gram–Schmidt, in place (a vector that vanishes stays zero).
fn orthonormalise(v: &mut [Vec<f64>]) {
    for k in 0..v.len() {
        let (done, rest) = v.split_at_mut(k);
        let x = &mut rest[0];
        for u in done.iter() {
            let c: f64 = x.iter().zip(u).map(|(a, b)| a * b).sum();
            x.iter_mut().zip(u).for_each(|(a, b)| *a -= c * b);
        }
        let n = x.iter().map(|y| y * y).sum::<f64>().sqrt();
        if n > 0.0 {
            x.iter_mut().for_each(|y| *y /= n);
        }
    }
}

/// `x` minus its projection on the orthonormal directions `dirs`.
fn project_out(x: &mut [f64], dirs: &[Vec<f64>]) {
    for u in dirs {
        let c: f64 = x.iter().zip(u).map(|(a, b)| a * b).sum();
        x.iter_mut().zip(u).for_each(|(a, b)| *a -= c * b);
    }
}

fn cholesky(mut a: Vec<f64>, d: usize) -> Result<Vec<f64>> {
    // In place: lower triangle of `a` holds the matrix, becomes L.
    for j in 0..d {
        let mut s = a[j * d + j];
        for k in 0..j {
            s -= a[j * d + k] * a[j * d + k];
        }
        if !(s > 0.0 && s.is_finite()) {
            return Err(TunerError::Config(
                "the TRAK Gram matrix is not positive definite".into(),
            ));
        }
        let ljj = s.sqrt();
        a[j * d + j] = ljj;
        for i in j + 1..d {
            let mut s = a[i * d + j];
            for k in 0..j {
                s -= a[i * d + k] * a[j * d + k];
            }
            a[i * d + j] = s / ljj;
        }
    }
    Ok(a)
}

fn solve_cholesky(l: &[f64], d: usize, mut b: Vec<f64>) -> Vec<f64> {
    for i in 0..d {
        let mut s = b[i];
        for k in 0..i {
            s -= l[i * d + k] * b[k];
        }
        b[i] = s / l[i * d + i];
    }
    for i in (0..d).rev() {
        let mut s = b[i];
        for k in i + 1..d {
            s -= l[k * d + i] * b[k];
        }
        b[i] = s / l[i * d + i];
    }
    b
}

/// `1 / ‖v‖` over the pieces allowed by `mask` when `unit` (0 for a zero
/// vector), else 1.
fn inv_norm(coords: &BlockCoords, v: &[f32], mask: &[bool], unit: bool) -> f64 {
    inv_norm_scaled(coords, v, mask, unit, None)
}

/// [`inv_norm`] of `v ⊙ scale`.
fn inv_norm_scaled(coords: &BlockCoords, v: &[f32], mask: &[bool], unit: bool, scale: Option<&[f64]>) -> f64 {
    if !unit {
        return 1.0;
    }
    let mut sq = 0f64;
    for (p, &m) in mask.iter().enumerate() {
        if m {
            for j in coords.piece_range(p) {
                let x = f64::from(v[j]) * scale.map_or(1.0, |s| s[j]);
                sq += x * x;
            }
        }
    }
    if sq > 0.0 {
        1.0 / sq.sqrt()
    } else {
        0.0
    }
}

fn check_dims(coords: &BlockCoords, examples: &[LoggedExample]) -> Result<()> {
    let dim = coords.dim();
    if let Some(e) = examples.iter().find(|e| e.values.len() != dim) {
        return Err(TunerError::Config(format!(
            "sketch of example {} has {} coordinates, the layout {dim}",
            e.index,
            e.values.len()
        )));
    }
    Ok(())
}

fn canonical_order(examples: &[LoggedExample]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..examples.len()).collect();
    order.sort_by(|&a, &b| {
        let (x, y) = (&examples[a], &examples[b]);
        (x.step, x.source, x.index, x.event)
            .cmp(&(y.step, y.source, y.index, y.event))
            .then_with(|| {
                // Identical keys (never in a real campaign): fall back to
                // the values' bits so the order stays input-independent.
                let bx = x.values.iter().map(|v| v.to_bits());
                let by = y.values.iter().map(|v| v.to_bits());
                bx.cmp(by)
            })
    });
    order
}

/// Piece masks per example, computed once per distinct routing mask.
struct MaskCache {
    masks: Vec<Vec<bool>>,
    of: Vec<usize>,
}

impl MaskCache {
    fn new(coords: &BlockCoords, examples: &[LoggedExample]) -> Self {
        let mut keys: Vec<Option<&RoutingMask>> = Vec::new();
        let mut masks = Vec::new();
        let of = examples
            .iter()
            .map(|e| {
                let k = e.routing.as_ref();
                match keys.iter().position(|x| *x == k) {
                    Some(i) => i,
                    None => {
                        keys.push(k);
                        masks.push(coords.piece_mask(k));
                        keys.len() - 1
                    }
                }
            })
            .collect();
        Self { masks, of }
    }
    fn get(&self, i: usize) -> &[bool] {
        &self.masks[self.of[i]]
    }
}

/// Scores one query against the logged examples. `pre` is required for
/// [`Method::Trak`] (fit it once with [`Preconditioner::fit`]) and ignored
/// for TracIn. The query gradients may come in any order.
pub fn score(
    coords: &BlockCoords,
    query: &[QueryGradient],
    examples: &[LoggedExample],
    lr: &LrSchedule,
    method: Method,
    pre: Option<&Preconditioner>,
) -> Result<TraceReport> {
    let dim = coords.dim();
    check_dims(coords, examples)?;
    if query.is_empty() {
        return Err(TunerError::Config("no query gradient".into()));
    }
    if let Some(q) = query.iter().find(|q| q.values.len() != dim) {
        return Err(TunerError::Config(format!(
            "query gradient at step {} has {} coordinates, the layout {dim}",
            q.step,
            q.values.len()
        )));
    }
    let mut qs: Vec<&QueryGradient> = query.iter().collect();
    qs.sort_by_key(|q| q.step);
    if qs.windows(2).any(|w| w[0].step == w[1].step) {
        return Err(TunerError::Config("two query gradients for one step".into()));
    }
    let nb = coords.blocks();
    // Per query checkpoint (TracIn) or once (TRAK): the per-block query.
    let unit = method.unit();
    let all = vec![true; coords.block_of.len()];
    let unit_query = |q: &QueryGradient| -> Vec<f32> {
        let s = inv_norm(coords, &q.values, &all, unit);
        q.values.iter().map(|&x| (f64::from(x) * s) as f32).collect()
    };
    let adam: Option<&[f64]> = if method.adam() {
        let pre =
            pre.ok_or_else(|| TunerError::Config("Adam TracIn needs a fitted preconditioner".into()))?;
        if pre.diag.len() != dim {
            return Err(TunerError::Config(
                "the preconditioner is not an Adam preconditioner of this layout".into(),
            ));
        }
        Some(&pre.diag)
    } else {
        None
    };
    let common: &[Vec<f64>] = if method.common() > 0 {
        let pre = pre.ok_or_else(|| {
            TunerError::Config("common-direction TracIn needs a fitted preconditioner".into())
        })?;
        if pre.common.len() != method.common() || pre.common.iter().any(|u| u.len() != dim) {
            return Err(TunerError::Config(
                "the preconditioner is not a common-direction preconditioner of this method and layout"
                    .into(),
            ));
        }
        if adam.is_some() {
            return Err(TunerError::Config(
                "Adam normalisation and common directions do not combine".into(),
            ));
        }
        &pre.common
    } else {
        &[]
    };
    let qblocks: Vec<Vec<Vec<f64>>> = match method {
        Method::TracIn { .. } if !common.is_empty() => qs
            .iter()
            .map(|q| {
                let mut v: Vec<f64> = q.values.iter().map(|&x| f64::from(x)).collect();
                project_out(&mut v, common);
                let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
                if n > 0.0 {
                    v.iter_mut().for_each(|x| *x /= n);
                }
                (0..nb)
                    .map(|b| {
                        let mut out = Vec::with_capacity(coords.pieces[b].len() * coords.side * coords.side);
                        for &p in &coords.pieces[b] {
                            out.extend_from_slice(&v[coords.piece_range(p)]);
                        }
                        out
                    })
                    .collect()
            })
            .collect(),
        Method::TracIn { .. } => qs
            .iter()
            .map(|q| {
                let v = unit_query(q);
                (0..nb).map(|b| coords.block_vec(b, &v, &all)).collect()
            })
            .collect(),
        Method::Trak { lambda, .. } => {
            let pre = pre.ok_or_else(|| TunerError::Config("TRAK needs a fitted preconditioner".into()))?;
            if pre.lambda.to_bits() != lambda.to_bits() || pre.unit != unit || pre.factors.len() != nb {
                return Err(TunerError::Config(
                    "the preconditioner was fitted with another damping, normalisation or layout".into(),
                ));
            }
            let last = qs[qs.len() - 1];
            vec![pre.apply(coords, &unit_query(last))]
        }
    };
    let order = canonical_order(examples);
    let masks = MaskCache::new(coords, examples);
    let s2 = coords.side * coords.side;
    // Routed normalisation: per query checkpoint and distinct mask,
    // `1 / ‖q‖` over the mask's pieces (the query is already unit over
    // all pieces).
    let routed_norm: Vec<Vec<f64>> = if method.routed() {
        qblocks
            .iter()
            .map(|qb| {
                masks
                    .masks
                    .iter()
                    .map(|m| {
                        let mut sq = 0f64;
                        for (b, pieces) in coords.pieces.iter().enumerate() {
                            for (j, &p) in pieces.iter().enumerate() {
                                if m[p] {
                                    sq += qb[b][j * s2..(j + 1) * s2].iter().map(|x| x * x).sum::<f64>();
                                }
                            }
                        }
                        if sq > 0.0 {
                            1.0 / sq.sqrt()
                        } else {
                            0.0
                        }
                    })
                    .collect()
            })
            .collect()
    } else {
        Vec::new()
    };
    let mut out_examples = Vec::with_capacity(examples.len());
    let mut per_block_total = vec![0f64; nb];
    let mut sources: BTreeMap<Digest, SourceScore> = BTreeMap::new();
    let mut events: BTreeMap<u64, KeyScore> = BTreeMap::new();
    let mut steps: BTreeMap<u64, KeyScore> = BTreeMap::new();
    let mut eb = vec![0f64; nb];
    for &i in &order {
        let e = &examples[i];
        let mask = masks.get(i);
        let (qi, factor) = match method {
            Method::TracIn { .. } => (nearest(&qs, e.step), f64::from(lr.at(e.step)?)),
            Method::Trak { .. } => (0, 1.0),
        };
        // Common directions: the example's unit routed sketch with them
        // projected out, restricted to its routed pieces again.
        let projected: Option<Vec<f64>> = if common.is_empty() {
            None
        } else {
            let mut z = unit_routed(coords, &e.values, mask);
            project_out(&mut z, common);
            for (p, &on) in mask.iter().enumerate() {
                if !on {
                    z[coords.piece_range(p)].iter_mut().for_each(|x| *x = 0.0);
                }
            }
            let n = z.iter().map(|x| x * x).sum::<f64>().sqrt();
            if n > 0.0 {
                z.iter_mut().for_each(|x| *x /= n);
            }
            Some(z)
        };
        let mut factor = match projected {
            Some(_) => factor,
            None => factor * inv_norm_scaled(coords, &e.values, mask, unit, adam),
        };
        if let Some(r) = routed_norm.get(qi) {
            factor *= r[masks.of[i]];
        }
        let qb = &qblocks[qi];
        let mut total = 0f64;
        for (b, slot) in eb.iter_mut().enumerate() {
            let mut acc = 0f64;
            for (j, &p) in coords.pieces[b].iter().enumerate() {
                if !mask[p] {
                    continue;
                }
                let ev = &e.values[p * s2..(p + 1) * s2];
                let qv = &qb[b][j * s2..(j + 1) * s2];
                if let Some(z) = &projected {
                    for (x, y) in z[p * s2..(p + 1) * s2].iter().zip(qv) {
                        acc += x * y;
                    }
                    continue;
                }
                match adam {
                    None => {
                        for (x, y) in ev.iter().zip(qv) {
                            acc += f64::from(*x) * y;
                        }
                    }
                    Some(d) => {
                        let dv = &d[p * s2..(p + 1) * s2];
                        for ((x, y), z) in ev.iter().zip(qv).zip(dv) {
                            acc += f64::from(*x) * z * y;
                        }
                    }
                }
            }
            *slot = factor * acc;
            total += *slot;
        }
        for (t, x) in per_block_total.iter_mut().zip(&eb) {
            *t += x;
        }
        let s = sources.entry(e.source).or_insert_with(|| SourceScore {
            source: e.source,
            score: 0.0,
            salient: 0.0,
            examples: 0,
            blocks: vec![0.0; nb],
        });
        s.score += total;
        s.examples += 1;
        for (t, x) in s.blocks.iter_mut().zip(&eb) {
            *t += x;
        }
        for (map, key) in [(&mut events, e.event), (&mut steps, e.step)] {
            let k = map.entry(key).or_insert(KeyScore {
                key,
                score: 0.0,
                examples: 0,
            });
            k.score += total;
            k.examples += 1;
        }
        out_examples.push(ExampleScore {
            source: e.source,
            index: e.index,
            step: e.step,
            event: e.event,
            score: total,
        });
    }
    let mut sorted: Vec<f64> = out_examples.iter().map(|e| e.score).collect();
    sorted.sort_by(|a, b| b.total_cmp(a));
    // At least 2, so that in a small campaign (n < 100) the top example's
    // excess over the next one still counts.
    let n = sorted.len();
    let k = ((SALIENT_FRACTION * n as f64).ceil() as usize).clamp(2.min(n).max(1), n.max(1));
    let salient_threshold = sorted.get(k - 1).copied().unwrap_or(0.0);
    for e in &out_examples {
        if e.score > salient_threshold {
            if let Some(s) = sources.get_mut(&e.source) {
                s.salient += e.score - salient_threshold;
            }
        }
    }
    let mut sources: Vec<SourceScore> = sources.into_values().collect();
    sources.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.source.cmp(&b.source)));
    let mut events: Vec<KeyScore> = events.into_values().collect();
    events.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.key.cmp(&b.key)));
    let abs: f64 = per_block_total.iter().map(|x| x.abs()).sum();
    let mut blocks: Vec<BlockScore> = per_block_total
        .iter()
        .enumerate()
        .map(|(b, &s)| BlockScore {
            block: b as u32,
            score: s,
            share: if abs > 0.0 { s.abs() / abs } else { 0.0 },
        })
        .collect();
    blocks.sort_by(|a, b| b.share.total_cmp(&a.share).then(a.block.cmp(&b.block)));
    Ok(TraceReport {
        method,
        examples: out_examples,
        sources,
        salient_threshold,
        events,
        steps: steps.into_values().collect(),
        blocks,
    })
}

/// Index (in step order) of the query checkpoint nearest to `step`; ties
/// go to the earlier checkpoint.
fn nearest(qs: &[&QueryGradient], step: u64) -> usize {
    let mut best = 0;
    for (i, q) in qs.iter().enumerate() {
        if q.step.abs_diff(step) < qs[best].step.abs_diff(step) {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lora::LoraConfig;
    use crate::model::ModelConfig;
    use provenance::RoutingGranularity;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha20Rng;

    fn coords() -> (AdapterLayout, BlockCoords) {
        let layout = AdapterLayout::new(
            ModelConfig {
                context: 16,
                d_model: 16,
                layers: 2,
                heads: 2,
                mlp_mult: 2,
            },
            LoraConfig {
                rank: 2,
                alpha: 4.0,
                dropout: 0.0,
            },
        )
        .unwrap();
        let c = BlockCoords::new(&layout, 2);
        (layout, c)
    }

    fn noise(rng: &mut ChaCha20Rng, d: usize, scale: f32) -> Vec<f32> {
        (0..d).map(|_| (rng.gen::<f32>() - 0.5) * scale).collect()
    }

    fn src(i: u8) -> Digest {
        Digest([i; 32])
    }

    /// 4 sources × 10 random examples; example 3 of source 2 is the query
    /// direction plus noise.
    fn world(c: &BlockCoords) -> (Vec<LoggedExample>, Vec<f32>) {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let d = c.dim();
        let q = noise(&mut rng, d, 2.0);
        let mut ex = Vec::new();
        for s in 0..4u8 {
            for i in 0..10u64 {
                let mut v = noise(&mut rng, d, 1.0);
                if s == 2 && i == 3 {
                    for (x, y) in v.iter_mut().zip(&q) {
                        *x = 0.2 * *x + y;
                    }
                }
                ex.push(LoggedExample {
                    source: src(s),
                    index: i,
                    step: i,
                    event: i / 2,
                    routing: None,
                    values: v,
                });
            }
        }
        (ex, q)
    }

    #[test]
    fn planted_example_dominates_both_methods_and_rankings_agree() {
        let (_, c) = coords();
        let (ex, q) = world(&c);
        let query = [QueryGradient { step: 10, values: q }];
        let lr = LrSchedule::Constant(0.01);
        let t = score(
            &c,
            &query,
            &ex,
            &lr,
            Method::TracIn {
                unit: false,
                adam: false,
                routed: false,
                common: 0,
            },
            None,
        )
        .unwrap();
        let pre = Preconditioner::fit(&c, &ex, 1.0, false).unwrap();
        let k = score(
            &c,
            &query,
            &ex,
            &lr,
            Method::Trak {
                lambda: 1.0,
                unit: false,
            },
            Some(&pre),
        )
        .unwrap();
        let pa = Preconditioner::fit_adam(&c, &ex).unwrap();
        let tu = score(&c, &query, &ex, &lr, Method::tracin_cosine(), None).unwrap();
        let pc = Preconditioner::fit_common(&c, &ex, DEFAULT_COMMON_DIRECTIONS).unwrap();
        let tc = score(&c, &query, &ex, &lr, Method::tracin(), Some(&pc)).unwrap();
        let ta = score(&c, &query, &ex, &lr, Method::tracin_adam(), Some(&pa)).unwrap();
        let pu = Preconditioner::fit(&c, &ex, DEFAULT_TRAK_LAMBDA, true).unwrap();
        let ku = score(&c, &query, &ex, &lr, Method::trak(), Some(&pu)).unwrap();
        for r in [&t, &k, &tu, &ku, &ta, &tc] {
            let top = r
                .examples
                .iter()
                .max_by(|a, b| a.score.total_cmp(&b.score))
                .unwrap();
            assert_eq!((top.source, top.index), (src(2), 3), "{}", r.method.name());
            assert_eq!(r.sources[0].source, src(2));
            assert_eq!(r.events[0].key, 1);
        }
        // Same source ranking on this easy case.
        let rank = |r: &TraceReport| r.sources.iter().map(|s| s.source).collect::<Vec<_>>();
        assert_eq!(rank(&t)[0], rank(&k)[0]);
        // The per-source and per-block sums add up to the total.
        let tot: f64 = t.examples.iter().map(|e| e.score).sum();
        let by_src: f64 = t.sources.iter().map(|s| s.score).sum();
        let by_blk: f64 = t.blocks.iter().map(|s| s.score).sum();
        assert!((tot - by_src).abs() < 1e-9 * tot.abs().max(1.0));
        assert!((tot - by_blk).abs() < 1e-9 * tot.abs().max(1.0));
    }

    #[test]
    fn tracin_and_trak_rank_sources_alike_on_separated_sources() {
        // Each source's examples lie along its own direction; the query is
        // a mix with decreasing weights, so both methods must order the
        // sources by those weights.
        let (_, c) = coords();
        let d = c.dim();
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let dirs: Vec<Vec<f32>> = (0..4).map(|_| noise(&mut rng, d, 2.0)).collect();
        let mut ex = Vec::new();
        for (s, dir) in dirs.iter().enumerate() {
            for i in 0..20u64 {
                let n = noise(&mut rng, d, 0.05);
                ex.push(LoggedExample {
                    source: src(s as u8),
                    index: i,
                    step: i,
                    event: i,
                    routing: None,
                    values: dir.iter().zip(&n).map(|(a, b)| a + b).collect(),
                });
            }
        }
        let w = [4.0f32, 1.0, 3.0, 2.0];
        let q: Vec<f32> = (0..d).map(|j| (0..4).map(|s| w[s] * dirs[s][j]).sum()).collect();
        let query = [QueryGradient { step: 20, values: q }];
        let lr = LrSchedule::Constant(1.0);
        let t = score(
            &c,
            &query,
            &ex,
            &lr,
            Method::TracIn {
                unit: false,
                adam: false,
                routed: false,
                common: 0,
            },
            None,
        )
        .unwrap();
        let pre = Preconditioner::fit(&c, &ex, 0.1, true).unwrap();
        let k = score(&c, &query, &ex, &lr, Method::trak(), Some(&pre)).unwrap();
        let pa = Preconditioner::fit_adam(&c, &ex).unwrap();
        let a = score(&c, &query, &ex, &lr, Method::tracin_adam(), Some(&pa)).unwrap();
        let rank = |r: &TraceReport| r.sources.iter().map(|s| s.source).collect::<Vec<_>>();
        let want = vec![src(0), src(2), src(3), src(1)];
        assert_eq!(rank(&t), want);
        assert_eq!(rank(&k), want);
        assert_eq!(rank(&a), want);
    }

    #[test]
    fn routed_out_blocks_contribute_nothing() {
        let (layout, c) = coords();
        let (mut ex, q) = world(&c);
        let query = [QueryGradient { step: 10, values: q }];
        let lr = LrSchedule::Constant(1.0);
        let before = score(
            &c,
            &query,
            &ex,
            &lr,
            Method::TracIn {
                unit: false,
                adam: false,
                routed: false,
                common: 0,
            },
            None,
        )
        .unwrap();
        // Route the planted example to block 0 only (the sketch keeps its
        // values elsewhere: the scorer must ignore them).
        let i = ex
            .iter()
            .position(|e| e.source == src(2) && e.index == 3)
            .unwrap();
        ex[i].routing = Some(RoutingMask::from_fn(
            RoutingGranularity::Block,
            layout.blocks(),
            |u| u == 0,
        ));
        let after = score(
            &c,
            &query,
            &ex,
            &lr,
            Method::TracIn {
                unit: false,
                adam: false,
                routed: false,
                common: 0,
            },
            None,
        )
        .unwrap();
        let blocks_of = |r: &TraceReport| {
            r.sources
                .iter()
                .find(|s| s.source == src(2))
                .unwrap()
                .blocks
                .clone()
        };
        let (b0, b1) = (blocks_of(&before), blocks_of(&after));
        // Block 0 unchanged, every other block loses exactly the planted
        // example's contribution (recomputed by hand).
        assert_eq!(b0[0].to_bits(), b1[0].to_bits());
        let e = &ex[i];
        for b in 1..c.blocks() {
            let mut own = 0f64;
            for &p in &c.pieces[b] {
                for j in c.piece_range(p) {
                    own += f64::from(e.values[j]) * f64::from(query[0].values[j]);
                }
            }
            assert!(own.abs() > 1e-6);
            assert!(
                (b0[b] - own - b1[b]).abs() < 1e-9 * b0[b].abs().max(1.0),
                "block {b}"
            );
        }
        // Routed out of everything: score exactly zero.
        ex[i].routing = Some(RoutingMask::from_fn(
            RoutingGranularity::Block,
            layout.blocks(),
            |_| false,
        ));
        let none = score(
            &c,
            &query,
            &ex,
            &lr,
            Method::TracIn {
                unit: false,
                adam: false,
                routed: false,
                common: 0,
            },
            None,
        )
        .unwrap();
        let s = none
            .examples
            .iter()
            .find(|x| x.source == src(2) && x.index == 3)
            .unwrap();
        assert_eq!(s.score, 0.0);
        // Head routing: the layer-0 attention pieces of head 1 only.
        let heads = layout.model.heads;
        let m = RoutingMask::from_fn(
            RoutingGranularity::Head,
            (layout.model.layers * (heads + 1)) as u32,
            |u| u == 1,
        );
        let mask = c.piece_mask(Some(&m));
        for (p, spec) in layout.pieces.iter().enumerate() {
            assert_eq!(mask[p], spec.layer == 0 && spec.head == Some(1), "{}", spec.name);
        }
    }

    #[test]
    fn routed_cosine_and_common_directions_respect_the_mask() {
        let (layout, c) = coords();
        let (mut ex, q) = world(&c);
        // The planted example is routed to block 0 only and equals the
        // query there: its routed cosine is exactly 1 (its plain cosine
        // only ‖q_block0‖ / ‖q‖).
        let i = ex
            .iter()
            .position(|e| e.source == src(2) && e.index == 3)
            .unwrap();
        ex[i].routing = Some(RoutingMask::from_fn(
            RoutingGranularity::Block,
            layout.blocks(),
            |u| u == 0,
        ));
        ex[i].values = q.clone();
        let query = [QueryGradient { step: 10, values: q }];
        let lr = LrSchedule::Constant(1.0);
        let routed = Method::TracIn {
            unit: true,
            adam: false,
            routed: true,
            common: 0,
        };
        let own = |r: &TraceReport| {
            r.examples
                .iter()
                .find(|x| x.source == src(2) && x.index == 3)
                .unwrap()
                .score
        };
        let r = score(&c, &query, &ex, &lr, routed, None).unwrap();
        assert!((own(&r) - 1.0).abs() < 1e-6, "{}", own(&r));
        let plain = score(&c, &query, &ex, &lr, Method::tracin_cosine(), None).unwrap();
        assert!(own(&plain) < 0.9 * own(&r));
        // Common directions out: still nothing outside block 0.
        let pc = Preconditioner::fit_common(&c, &ex, DEFAULT_COMMON_DIRECTIONS).unwrap();
        let t = score(&c, &query, &ex, &lr, Method::tracin(), Some(&pc)).unwrap();
        assert!(own(&t) > 0.0);
        let only: Vec<LoggedExample> = ex.iter().filter(|e| e.routing.is_some()).cloned().collect();
        let t1 = score(&c, &query, &only, &lr, Method::tracin(), Some(&pc)).unwrap();
        for (b, x) in t1.sources[0].blocks.iter().enumerate().skip(1) {
            assert_eq!(*x, 0.0, "block {b}");
        }
        // A wrong preconditioner is a typed error.
        assert!(score(&c, &query, &ex, &lr, Method::tracin(), None).is_err());
        let pa = Preconditioner::fit_adam(&c, &ex).unwrap();
        assert!(score(&c, &query, &ex, &lr, Method::tracin(), Some(&pa)).is_err());
    }

    #[test]
    fn tracin_uses_the_nearest_checkpoint_and_the_step_rate() {
        let (_, c) = coords();
        let d = c.dim();
        let ones = vec![1.0f32; d];
        let ex: Vec<LoggedExample> = [1u64, 4, 6, 9]
            .iter()
            .map(|&s| LoggedExample {
                source: src(0),
                index: s,
                step: s,
                event: s,
                routing: None,
                values: ones.clone(),
            })
            .collect();
        // Query 1 at step 0, 2 at step 5, 3 at step 10 (all coordinates).
        let query: Vec<QueryGradient> = [(10u64, 3.0f32), (0, 1.0), (5, 2.0)]
            .iter()
            .map(|&(step, v)| QueryGradient {
                step,
                values: vec![v; d],
            })
            .collect();
        let lr = LrSchedule::PerStep((0..10).map(|i| i as f32).collect());
        let r = score(
            &c,
            &query,
            &ex,
            &lr,
            Method::TracIn {
                unit: false,
                adam: false,
                routed: false,
                common: 0,
            },
            None,
        )
        .unwrap();
        let got: Vec<f64> = r.examples.iter().map(|e| e.score).collect();
        // Step 1 → ckpt 0; 4 → 5; 6 → 5; 9 → 10. Score = lr · q · d.
        let want = [1.0 * 1.0, 4.0 * 2.0, 6.0 * 2.0, 9.0 * 3.0].map(|x| x * d as f64);
        assert_eq!(got, want);
        assert!(LrSchedule::PerStep(vec![0.1]).at(3).is_err());
    }

    #[test]
    fn scores_are_bit_identical_in_any_input_order() {
        let (_, c) = coords();
        let (ex, q) = world(&c);
        let query = [
            QueryGradient {
                step: 0,
                values: q.iter().map(|x| x * 0.5).collect(),
            },
            QueryGradient { step: 10, values: q },
        ];
        let lr = LrSchedule::Constant(0.003);
        let mut rev = ex.clone();
        rev.reverse();
        let mut rq = query.to_vec();
        rq.reverse();
        for m in [
            Method::tracin(),
            Method::tracin_cosine(),
            Method::tracin_adam(),
            Method::TracIn {
                unit: false,
                adam: false,
                routed: false,
                common: 0,
            },
            Method::trak(),
            Method::Trak {
                lambda: 0.5,
                unit: false,
            },
        ] {
            let (lambda, unit) = match m {
                Method::Trak { lambda, unit } => (lambda, unit),
                Method::TracIn { unit, .. } => (DEFAULT_TRAK_LAMBDA, unit),
            };
            let fit = |x: &[LoggedExample]| {
                if m.adam() {
                    Preconditioner::fit_adam(&c, x).unwrap()
                } else if m.common() > 0 {
                    Preconditioner::fit_common(&c, x, m.common()).unwrap()
                } else {
                    Preconditioner::fit(&c, x, lambda, unit).unwrap()
                }
            };
            let (p1, p2) = (fit(&ex), fit(&rev));
            let a = score(&c, &query, &ex, &lr, m, Some(&p1)).unwrap();
            let b = score(&c, &rq, &rev, &lr, m, Some(&p2)).unwrap();
            assert_eq!(a, b);
            assert_eq!(a.digest(), b.digest());
            // A one-ulp change of one sketch changes the digest.
            let mut ex2 = ex.clone();
            ex2[7].values[0] = f32::from_bits(ex2[7].values[0].to_bits() ^ 1);
            let p3 = fit(&ex2);
            let c2 = score(&c, &query, &ex2, &lr, m, Some(&p3)).unwrap();
            assert_ne!(a.digest(), c2.digest());
        }
    }

    #[test]
    fn malformed_inputs_are_typed_errors() {
        let (_, c) = coords();
        let (mut ex, q) = world(&c);
        let lr = LrSchedule::Constant(1.0);
        assert!(score(
            &c,
            &[],
            &ex,
            &lr,
            Method::TracIn {
                unit: false,
                adam: false,
                routed: false,
                common: 0,
            },
            None
        )
        .is_err());
        let query = [QueryGradient { step: 1, values: q }];
        assert!(score(&c, &query, &ex, &lr, Method::trak(), None).is_err());
        assert!(Preconditioner::fit(&c, &ex, 0.0, true).is_err());
        // A preconditioner fitted without normalisation cannot serve the
        // normalised method.
        let raw = Preconditioner::fit(&c, &ex, DEFAULT_TRAK_LAMBDA, false).unwrap();
        assert!(score(&c, &query, &ex, &lr, Method::trak(), Some(&raw)).is_err());
        ex[0].values.pop();
        assert!(score(
            &c,
            &query,
            &ex,
            &lr,
            Method::TracIn {
                unit: false,
                adam: false,
                routed: false,
                common: 0,
            },
            None
        )
        .is_err());
    }
}
