//! The fitted preconditioners: TRAK's damped inverse Gram matrices, the Adam diagonal, common directions.

use crate::error::{Result, TunerError};

use super::coords::{inv_norm, unit_routed, BlockCoords, MaskCache};
use super::inputs::{canonical_order, check_dims, LoggedExample};
use super::linalg::{cholesky, orthonormalise, solve_cholesky};

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
    pub(super) factors: Vec<(usize, Vec<f64>)>,
    /// Per coordinate `1 / rms` (Adam preconditioner), empty for TRAK.
    pub(super) diag: Vec<f64>,
    /// Orthonormal dominant directions of the unit example sketches
    /// (common-direction preconditioner), empty otherwise.
    pub(super) common: Vec<Vec<f64>>,
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

    /// The Adam-style diagonal for [`Method::TracIn`](super::Method::TracIn)
    /// with `adam`: per coordinate `1 / √(mean of v²)` over the examples
    /// routed to its piece (0 where every such value is 0).
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
    /// most examples, which [`Method::TracIn`](super::Method::TracIn) with
    /// `common = m` projects out. Subspace iteration from a fixed start
    /// (sequential `f64` in canonical example order, so deterministic to
    /// the bit); only the subspace matters, not the individual vectors.
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
    pub(super) fn apply(&self, coords: &BlockCoords, q: &[f32]) -> Vec<Vec<f64>> {
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
