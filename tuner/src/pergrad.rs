//! Per-example gradient quantities from one batched pass.
//!
//! After one forward and one backward pass over the whole batch, every
//! site has its input activations `X [B, T, in]` (recorded) and its output
//! gradient `G [B, T, out]` (the gradient of its zero probe variable, with
//! the loss a *sum* of per-example mean losses, so `G_i` is example `i`'s
//! own gradient). For a piece reading input slice `I` and writing output
//! slice `O`, example `i`'s gradient is `G_i[:, O]ᵀ X_i[:, I]`.
//!
//! * **Norms (ghost clipping).** `‖G_iᵀX_i‖²_F = ⟨X_i X_iᵀ, G_i G_iᵀ⟩`: two
//!   `[T, T]` Gram matrices per example instead of the `[out, in]`
//!   gradient. As in mixed ghost clipping, the tuner uses the Gram form
//!   when `T² < out·in` and materialises `G_iᵀX_i` (batched) otherwise;
//!   both are exact.
//! * **Clipped sum.** With per-(example, piece) weights `w_i` (clip factor
//!   × routing bit / batch size) the applied gradient is
//!   `Σ_i w_i G_iᵀ X_i = (w ⊙ G)ᵀ X` over the flattened batch: one matmul.
//! * **Sketches (LoGra).** With fixed random `P_out [s, out]`, `P_in [s, in]`
//!   the projected gradient `P_out G_iᵀ X_i P_inᵀ = (G_i P_outᵀ)ᵀ (X_i P_inᵀ)`
//!   is an `[s, s]` block computed from projected activations and
//!   gradients, never from the full per-example gradient.
//!
//! [`reference`] recomputes the same quantities with a loop of batch-size-1
//! passes and materialised gradients; tests compare the two.

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor};
use provenance::digest::{tagged_hash_parts, ObjectKind};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::error::{Result, TunerError};
use crate::lora::{AdapterLayout, Adapters, LoraForward, PieceSpec};
use crate::model::{forward, per_example_loss, ModelConfig};

/// Site inputs and output gradients of one batched pass.
pub struct SiteTensors {
    /// `(X, G)` per site.
    pub sites: Vec<(Tensor, Tensor)>,
}

impl SiteTensors {
    /// Collects `X` from the forward record and `G` from the probes'
    /// gradients.
    pub fn collect(f: &LoraForward, grads: &GradStore) -> Result<Self> {
        let probes = f
            .probes
            .as_ref()
            .ok_or_else(|| TunerError::Config("forward pass ran without probes".into()))?;
        let mut sites = Vec::with_capacity(probes.len());
        for (i, p) in probes.iter().enumerate() {
            let x = f.inputs[i]
                .clone()
                .ok_or_else(|| TunerError::Config(format!("site {i} was not recorded")))?;
            let g = match grads.get(p.as_tensor()) {
                Some(g) => g.clone(),
                None => p.as_tensor().zeros_like()?,
            };
            sites.push((x, g));
        }
        Ok(Self { sites })
    }

    fn slices(&self, p: &PieceSpec) -> Result<(Tensor, Tensor)> {
        let (x, g) = &self.sites[p.site];
        let xi = narrow_last(x, &p.in_range)?;
        let go = narrow_last(g, &p.out_range)?;
        Ok((xi, go))
    }
}

fn narrow_last(t: &Tensor, r: &std::ops::Range<usize>) -> Result<Tensor> {
    let n = t.dim(2)?;
    if r.start == 0 && r.end == n {
        Ok(t.clone())
    } else {
        Ok(t.narrow(2, r.start, r.len())?.contiguous()?)
    }
}

/// Squared per-example gradient norms, `[piece][example]`.
pub fn sq_norms(layout: &AdapterLayout, st: &SiteTensors) -> Result<Vec<Vec<f32>>> {
    let mut per_piece = Vec::with_capacity(layout.pieces.len());
    for p in &layout.pieces {
        let (x, g) = st.slices(p)?;
        let t = x.dim(1)?;
        let n2 = if t * t < p.rows * p.cols {
            let xx = x.matmul(&x.t()?)?;
            let gg = g.matmul(&g.t()?)?;
            (xx * gg)?.sum((1, 2))?
        } else {
            g.t()?.matmul(&x)?.sqr()?.sum((1, 2))?
        };
        per_piece.push(n2);
    }
    Ok(Tensor::stack(&per_piece, 0)?.to_vec2::<f32>()?)
}

/// The applied gradient of each piece, `Σ_i w[piece][i] · G_iᵀ X_i`;
/// `None` where every weight is zero (the piece is not updated at all).
pub fn weighted_sum(
    layout: &AdapterLayout,
    st: &SiteTensors,
    w: &[Vec<f32>],
) -> Result<Vec<Option<Vec<f32>>>> {
    let mut flat = Vec::new();
    let mut active = Vec::with_capacity(layout.pieces.len());
    for (pi, p) in layout.pieces.iter().enumerate() {
        if w[pi].iter().all(|&v| v == 0.0) {
            active.push(false);
            continue;
        }
        active.push(true);
        let (x, g) = st.slices(p)?;
        let (b, t, _) = x.dims3()?;
        let wt = Tensor::from_slice(&w[pi], (b, 1, 1), x.device())?;
        let gw = g.broadcast_mul(&wt)?.reshape((b * t, p.rows))?;
        let grad = gw.t()?.matmul(&x.reshape((b * t, p.cols))?)?;
        flat.push(grad.flatten_all()?);
    }
    let all: Vec<f32> = if flat.is_empty() {
        Vec::new()
    } else {
        Tensor::cat(&flat, 0)?.to_vec1::<f32>()?
    };
    let mut out = Vec::with_capacity(layout.pieces.len());
    let mut off = 0;
    for (p, a) in layout.pieces.iter().zip(active) {
        if a {
            out.push(Some(all[off..off + p.len()].to_vec()));
            off += p.len();
        } else {
            out.push(None);
        }
    }
    Ok(out)
}

/// The fixed random projection of a campaign's gradient sketches: for each
/// piece, Rademacher `P_out [s, rows]` and `P_in [s, cols]` scaled by
/// `1/√s`, each from a ChaCha20 stream seeded with
/// `SHA3(tag "govtune/v1/blob" ‖ "sketch-projection/v1" ‖ seed ‖ piece name ‖ "out"|"in")`.
#[derive(Debug, Clone)]
pub struct Projection {
    /// Side `s`: each piece contributes `s²` coordinates.
    pub side: usize,
    /// Campaign sketch seed.
    pub seed: u64,
    mats: Vec<(Tensor, Tensor)>,
    layout: std::sync::Arc<AdapterLayout>,
}

impl Projection {
    /// The projection for `layout` (dimension `pieces · side²`).
    pub fn new(layout: &AdapterLayout, seed: u64, side: usize) -> Result<Self> {
        if side == 0 {
            return Err(TunerError::Config("sketch side must be positive".into()));
        }
        let dev = Device::Cpu;
        let s = 1.0 / (side as f32).sqrt();
        let mut mats = Vec::with_capacity(layout.pieces.len());
        for p in &layout.pieces {
            let mk = |what: &[u8], n: usize| -> Result<Tensor> {
                let d = tagged_hash_parts(
                    ObjectKind::Blob,
                    &[
                        b"sketch-projection/v1",
                        &seed.to_be_bytes(),
                        p.name.as_bytes(),
                        what,
                    ],
                );
                let mut rng = ChaCha20Rng::from_seed(d.0);
                let v: Vec<f32> = (0..side * n)
                    .map(|_| if rng.gen::<bool>() { s } else { -s })
                    .collect();
                Ok(Tensor::from_vec(v, (side, n), &dev)?)
            };
            mats.push((mk(b"out", p.rows)?, mk(b"in", p.cols)?));
        }
        Ok(Self {
            side,
            seed,
            mats,
            layout: std::sync::Arc::new(layout.clone()),
        })
    }

    /// The adapter layout the projection was built for.
    pub fn layout(&self) -> &AdapterLayout {
        &self.layout
    }

    /// Sketch dimension.
    pub fn dim(&self) -> usize {
        self.mats.len() * self.side * self.side
    }

    /// Sketch dimension for a layout without building the matrices.
    pub fn dim_for(layout: &AdapterLayout, side: usize) -> usize {
        layout.pieces.len() * side * side
    }

    /// Projects a materialised gradient of piece `i` (`[rows, cols]`).
    pub fn project_piece(&self, i: usize, grad: &Tensor) -> Result<Tensor> {
        let (po, pin) = &self.mats[i];
        Ok(po.matmul(grad)?.matmul(&pin.t()?)?.flatten_all()?)
    }

    /// Per-example sketches `[example][dim]`, zero on pieces an example is
    /// not routed to (`routed[piece][example]`), from one batched pass.
    pub fn sketches(
        &self,
        layout: &AdapterLayout,
        st: &SiteTensors,
        routed: &[Vec<bool>],
    ) -> Result<Vec<Vec<f32>>> {
        let s = self.side;
        let mut cols = Vec::with_capacity(layout.pieces.len());
        for (pi, p) in layout.pieces.iter().enumerate() {
            let (x, g) = st.slices(p)?;
            let (b, t, _) = x.dims3()?;
            let (po, pin) = &self.mats[pi];
            let xs = x
                .reshape((b * t, p.cols))?
                .matmul(&pin.t()?)?
                .reshape((b, t, s))?;
            let gs = g.reshape((b * t, p.rows))?.matmul(&po.t()?)?.reshape((b, t, s))?;
            let sk = gs.t()?.matmul(&xs)?.reshape((b, s * s))?;
            let m: Vec<f32> = routed[pi].iter().map(|&r| if r { 1.0 } else { 0.0 }).collect();
            let m = Tensor::from_vec(m, (b, 1), x.device())?;
            cols.push(sk.broadcast_mul(&m)?);
        }
        Ok(Tensor::cat(&cols, 1)?.to_vec2::<f32>()?)
    }
}

/// What the batch-size-1 reference loop computes per example.
pub struct Reference {
    /// Squared norms `[piece][example]`.
    pub sq_norms: Vec<Vec<f32>>,
    /// Materialised gradients `[example][piece]`.
    pub grads: Vec<Vec<Vec<f32>>>,
    /// Unmasked sketches `[example][dim]`.
    pub sketches: Vec<Vec<f32>>,
}

/// The reference: one forward and backward pass per example, materialised
/// gradients, norms and projections from them.
pub fn reference(
    cfg: &ModelConfig,
    base: &std::collections::BTreeMap<String, Tensor>,
    adapters: &Adapters,
    windows: &[&[u8]],
    proj: Option<&Projection>,
) -> Result<Reference> {
    let dev = Device::Cpu;
    let layout = &adapters.layout;
    let mut sq = vec![Vec::with_capacity(windows.len()); layout.pieces.len()];
    let mut grads = Vec::with_capacity(windows.len());
    let mut sketches = Vec::with_capacity(windows.len());
    for w in windows {
        let (inp, tgt) = crate::model::batch_tensors(&[w], &dev)?;
        let t = inp.dim(1)?;
        let mut f = LoraForward::probing(adapters, 1, t, None, &dev)?;
        let logits = forward(cfg, base, &inp, Some(&mut f))?;
        let loss = per_example_loss(&logits, &tgt)?.sum_all()?;
        let gs = loss.backward()?;
        let st = SiteTensors::collect(&f, &gs)?;
        let mut gex = Vec::with_capacity(layout.pieces.len());
        let mut skx = Vec::new();
        for (pi, p) in layout.pieces.iter().enumerate() {
            let (x, g) = st.slices(p)?;
            let grad = g.get(0)?.t()?.matmul(&x.get(0)?)?;
            sq[pi].push(grad.sqr()?.sum_all()?.to_scalar::<f32>()?);
            if let Some(pr) = proj {
                skx.extend(pr.project_piece(pi, &grad)?.to_vec1::<f32>()?);
            }
            gex.push(grad.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?);
        }
        grads.push(gex);
        sketches.push(skx);
    }
    Ok(Reference {
        sq_norms: sq,
        grads,
        sketches,
    })
}
