//! LoRA adapters, laid out so that every routing unit owns whole tensors.
//!
//! Each adapted projection `y = W x` gains `y += (α/r) · B (A x)`: two
//! trainable matrices. The attention projections are adapted **per head**:
//! for Q, K and V, head `h` has its own `A_h [r, d]` and `B_h [d_h, r]`
//! writing only that head's output slice; for the output projection O,
//! head `h` has `A_h [r, d_h]` reading only that head's input slice and
//! `B_h [d, r]`. The MLP's up and down projections have one pair each.
//! So a head routed out at [`RoutingGranularity::Head`] is a set of whole
//! tensors ("pieces") that the optimizer simply skips; coarser
//! granularities are unions of pieces.
//!
//! A piece is always seen as a linear map from a slice of its *site*'s
//! input to a slice of its site's output. A site is one matrix product of
//! the forward pass; [`LoraForward`] records its input activations `X`
//! `[B, T, in]` and adds a zero "probe" variable to its output, whose
//! gradient is `G = ∂L/∂Y` `[B, T, out]`. The per-example gradient of a
//! piece is then `G_iᵀ X_i` restricted to its slices (see `pergrad`).

use std::ops::Range;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor, Var};
use provenance::digest::{tagged_hash_parts, ObjectKind};
use provenance::{Digest, RoutingGranularity};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TunerError};
use crate::model::{f32_bytes, normal, tensor_header, ModelConfig};

/// LoRA hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    /// Rank per adapted projection (per head for attention).
    pub rank: usize,
    /// Scale numerator: the update is `(alpha / rank) · B A`.
    pub alpha: f32,
    /// Dropout on the adapters' inputs (0 disables it).
    pub dropout: f32,
}

/// An adapted projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proj {
    /// Attention query.
    Q,
    /// Attention key.
    K,
    /// Attention value.
    V,
    /// Attention output.
    O,
    /// MLP up projection.
    Up,
    /// MLP down projection.
    Down,
}

impl Proj {
    const ALL: [Proj; 6] = [Proj::Q, Proj::K, Proj::V, Proj::O, Proj::Up, Proj::Down];
    fn index(self) -> usize {
        self as usize
    }
    fn name(self) -> &'static str {
        match self {
            Proj::Q => "q",
            Proj::K => "k",
            Proj::V => "v",
            Proj::O => "o",
            Proj::Up => "up",
            Proj::Down => "down",
        }
    }
    fn is_attention(self) -> bool {
        !matches!(self, Proj::Up | Proj::Down)
    }
}

/// How a site's pieces form its weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SiteKind {
    /// One piece is the whole weight.
    Dense,
    /// Pieces stacked along the output dimension (each writes a slice).
    RowSplit,
    /// Pieces side by side along the input dimension (each reads a slice).
    ColSplit,
    /// Block-diagonal: piece `h` maps input slice `h` to output slice `h`.
    BlockDiag,
}

/// One trainable tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PieceSpec {
    /// Stable name, e.g. `l01.q.h2.A`.
    pub name: String,
    /// Rows (output features of the piece).
    pub rows: usize,
    /// Columns (input features of the piece).
    pub cols: usize,
    /// Layer.
    pub layer: usize,
    /// Attention head, for attention pieces.
    pub head: Option<usize>,
    /// The site (matrix product) the piece belongs to.
    pub site: usize,
    /// Output slice of the site the piece writes.
    pub out_range: Range<usize>,
    /// Input slice of the site the piece reads.
    pub in_range: Range<usize>,
    /// Whether this is a `B` (second) matrix.
    pub is_b: bool,
}

impl PieceSpec {
    /// The parameter block (forward order: layer `l` attention `2l`, MLP
    /// `2l + 1`), as admission numbers them.
    pub fn block(&self) -> u32 {
        2 * self.layer as u32 + u32::from(self.head.is_none())
    }

    /// The routing unit of this piece at `granularity` for a model with
    /// `heads` heads (the numbering of `provenance::admission::routing_mask`).
    pub fn unit(&self, granularity: RoutingGranularity, heads: usize) -> u32 {
        match granularity {
            RoutingGranularity::Block => self.block(),
            RoutingGranularity::Layer => self.layer as u32,
            RoutingGranularity::Head => (self.layer * (heads + 1) + self.head.unwrap_or(heads)) as u32,
        }
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.rows * self.cols
    }

    /// Always false (pieces have positive shape).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One matrix product of the adapted forward pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteSpec {
    /// Layout of the pieces.
    pub kind: SiteKind,
    /// Pieces, in order.
    pub pieces: Vec<usize>,
    /// Input width.
    pub in_dim: usize,
    /// Output width.
    pub out_dim: usize,
}

/// Every piece and site of a model's adapters.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterLayout {
    /// The model.
    pub model: ModelConfig,
    /// LoRA hyper-parameters.
    pub lora: LoraConfig,
    /// Trainable tensors, in a fixed order.
    pub pieces: Vec<PieceSpec>,
    /// Sites; site `(l·6 + proj)·2` is projection `proj`'s `A`, `+1` its `B`.
    pub sites: Vec<SiteSpec>,
}

impl AdapterLayout {
    /// The layout for a model.
    pub fn new(model: ModelConfig, lora: LoraConfig) -> Result<Self> {
        model.validate()?;
        if lora.rank == 0 || !(0.0..1.0).contains(&lora.dropout) || !lora.alpha.is_finite() {
            return Err(TunerError::Config(
                "lora: rank must be positive, dropout in [0, 1), alpha finite".into(),
            ));
        }
        let (d, h, dh, f, r) = (
            model.d_model,
            model.heads,
            model.head_dim(),
            model.hidden(),
            lora.rank,
        );
        let mut pieces = Vec::new();
        let mut sites = Vec::new();
        for l in 0..model.layers {
            for p in Proj::ALL {
                // (kind, in, out, [(rows, cols, head, out_range, in_range)]) for A then B.
                type P = (usize, usize, Option<usize>, Range<usize>, Range<usize>);
                #[allow(clippy::type_complexity)]
                let (a, b): (
                    (SiteKind, usize, usize, Vec<P>),
                    (SiteKind, usize, usize, Vec<P>),
                ) = match p {
                    Proj::Q | Proj::K | Proj::V => (
                        (
                            SiteKind::RowSplit,
                            d,
                            h * r,
                            (0..h)
                                .map(|j| (r, d, Some(j), j * r..(j + 1) * r, 0..d))
                                .collect(),
                        ),
                        (
                            SiteKind::BlockDiag,
                            h * r,
                            d,
                            (0..h)
                                .map(|j| (dh, r, Some(j), j * dh..(j + 1) * dh, j * r..(j + 1) * r))
                                .collect(),
                        ),
                    ),
                    Proj::O => (
                        (
                            SiteKind::BlockDiag,
                            d,
                            h * r,
                            (0..h)
                                .map(|j| (r, dh, Some(j), j * r..(j + 1) * r, j * dh..(j + 1) * dh))
                                .collect(),
                        ),
                        (
                            SiteKind::ColSplit,
                            h * r,
                            d,
                            (0..h)
                                .map(|j| (d, r, Some(j), 0..d, j * r..(j + 1) * r))
                                .collect(),
                        ),
                    ),
                    Proj::Up => (
                        (SiteKind::Dense, d, r, vec![(r, d, None, 0..r, 0..d)]),
                        (SiteKind::Dense, r, f, vec![(f, r, None, 0..f, 0..r)]),
                    ),
                    Proj::Down => (
                        (SiteKind::Dense, f, r, vec![(r, f, None, 0..r, 0..f)]),
                        (SiteKind::Dense, r, d, vec![(d, r, None, 0..d, 0..r)]),
                    ),
                };
                for (is_b, (kind, in_dim, out_dim, ps)) in [(false, a), (true, b)] {
                    let site = sites.len();
                    let mut ids = Vec::new();
                    for (rows, cols, head, out_range, in_range) in ps {
                        ids.push(pieces.len());
                        let hname = head.map(|j| format!(".h{j}")).unwrap_or_default();
                        pieces.push(PieceSpec {
                            name: format!("l{l:02}.{}{hname}.{}", p.name(), if is_b { "B" } else { "A" }),
                            rows,
                            cols,
                            layer: l,
                            head,
                            site,
                            out_range,
                            in_range,
                            is_b,
                        });
                    }
                    debug_assert_eq!(p.is_attention(), pieces[ids[0]].head.is_some());
                    sites.push(SiteSpec {
                        kind,
                        pieces: ids,
                        in_dim,
                        out_dim,
                    });
                }
            }
        }
        Ok(Self {
            model,
            lora,
            pieces,
            sites,
        })
    }

    /// The site index of projection `p`'s `A` (`b = false`) or `B`.
    pub fn site_of(&self, layer: usize, p: Proj, b: bool) -> usize {
        (layer * 6 + p.index()) * 2 + usize::from(b)
    }

    /// Number of trainable values.
    pub fn param_count(&self) -> usize {
        self.pieces.iter().map(PieceSpec::len).sum()
    }

    /// The LoRA scale `alpha / rank`.
    pub fn scale(&self) -> f64 {
        f64::from(self.lora.alpha) / self.lora.rank as f64
    }

    /// Pieces of parameter block `block`.
    pub fn block_pieces(&self, block: u32) -> impl Iterator<Item = usize> + '_ {
        self.pieces
            .iter()
            .enumerate()
            .filter(move |(_, p)| p.block() == block)
            .map(|(i, _)| i)
    }

    /// Number of parameter blocks (2 per layer).
    pub fn blocks(&self) -> u32 {
        2 * self.model.layers as u32
    }
}

/// Adapter values: one host vector per piece.
#[derive(Debug, Clone, PartialEq)]
pub struct Adapters {
    /// The layout.
    pub layout: Arc<AdapterLayout>,
    /// Values per piece, row-major.
    pub values: Vec<Vec<f32>>,
}

/// The seed of the adapters' initialisation, derived from the campaign's
/// sketch seed (so the campaign record fixes the starting state).
pub fn adapter_init_seed(campaign_seed: u64) -> u64 {
    let d = tagged_hash_parts(ObjectKind::Blob, &[b"lora-init", &campaign_seed.to_be_bytes()]);
    u64::from_be_bytes(d.0[..8].try_into().unwrap_or([0; 8]))
}

impl Adapters {
    /// The standard LoRA start: every `A` drawn N(0, 1/cols), every `B`
    /// zero, so the adapted model equals the base model.
    pub fn init(layout: Arc<AdapterLayout>, seed: u64) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let values = layout
            .pieces
            .iter()
            .map(|p| {
                if p.is_b {
                    vec![0.0; p.len()]
                } else {
                    let s = 1.0 / (p.cols as f32).sqrt();
                    (0..p.len()).map(|_| normal(&mut rng) * s).collect()
                }
            })
            .collect();
        Self { layout, values }
    }

    /// Candle tensors of every piece.
    pub fn tensors(&self, dev: &Device) -> Result<Vec<Tensor>> {
        self.layout
            .pieces
            .iter()
            .zip(&self.values)
            .map(|(p, v)| Ok(Tensor::from_slice(v, (p.rows, p.cols), dev)?))
            .collect()
    }

    /// Model-state digest: the frozen base's weights digest, then every
    /// piece's name, shape and little-endian bytes, in layout order.
    pub fn state_digest(&self, base: &Digest) -> Digest {
        let mut parts: Vec<Vec<u8>> = vec![b"model-state/v1".to_vec(), base.0.to_vec()];
        for (p, v) in self.layout.pieces.iter().zip(&self.values) {
            parts.push(tensor_header(&p.name, &[p.rows, p.cols]));
            parts.push(f32_bytes(v));
        }
        let refs: Vec<&[u8]> = parts.iter().map(|p| p.as_slice()).collect();
        tagged_hash_parts(ObjectKind::Blob, &refs)
    }

    /// A model-state snapshot blob: safetensors of every piece.
    pub fn snapshot_bytes(&self) -> Result<Vec<u8>> {
        let dev = Device::Cpu;
        let ts: Vec<(String, Tensor)> = self
            .layout
            .pieces
            .iter()
            .zip(self.tensors(&dev)?)
            .map(|(p, t)| (p.name.clone(), t))
            .collect();
        let path = std::env::temp_dir().join(format!(
            "govtune-snapshot-{}-{}.safetensors",
            std::process::id(),
            SNAP_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let map: std::collections::HashMap<String, Tensor> = ts.into_iter().collect();
        candle_core::safetensors::save(&map, &path)?;
        let bytes = std::fs::read(&path).map_err(|e| TunerError::io(&path, e))?;
        let _ = std::fs::remove_file(&path);
        Ok(bytes)
    }

    /// Reads a snapshot blob written by [`Adapters::snapshot_bytes`].
    pub fn from_snapshot(layout: Arc<AdapterLayout>, bytes: &[u8]) -> Result<Self> {
        let loaded = candle_core::safetensors::load_buffer(bytes, &Device::Cpu)?;
        let mut values = Vec::with_capacity(layout.pieces.len());
        for p in &layout.pieces {
            let t = loaded.get(&p.name).ok_or_else(|| TunerError::Blob {
                kind: "snapshot",
                reason: format!("missing piece {}", p.name),
            })?;
            if t.dims() != [p.rows, p.cols] || t.dtype() != DType::F32 {
                return Err(TunerError::Blob {
                    kind: "snapshot",
                    reason: format!("piece {} has shape {:?}", p.name, t.dims()),
                });
            }
            values.push(t.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(Self { layout, values })
    }
}

static SNAP_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Where the adapted forward pass takes its piece weights from.
enum PieceSource {
    /// Constant tensors (governed path, evaluation).
    Fixed(Vec<Tensor>),
    /// Candle variables (the ungoverned baseline, autograd on weights).
    Vars(Vec<Var>),
}

/// The adapters' part of one forward pass: site weights, optional probe
/// variables and dropout masks, and the recorded site inputs.
pub struct LoraForward {
    layout: Arc<AdapterLayout>,
    site_w: Vec<Tensor>,
    /// Probe variables, one per site, zeros `[B, T, out]`.
    pub probes: Option<Vec<Var>>,
    /// Recorded site inputs `[B, T, in]` (after dropout), when probing.
    pub inputs: Vec<Option<Tensor>>,
    masks: Option<Vec<Tensor>>,
    source: PieceSource,
}

impl LoraForward {
    fn build(layout: Arc<AdapterLayout>, source: PieceSource) -> Result<Self> {
        let pt: Vec<Tensor> = match &source {
            PieceSource::Fixed(t) => t.clone(),
            PieceSource::Vars(v) => v.iter().map(|v| v.as_tensor().clone()).collect(),
        };
        let mut site_w = Vec::with_capacity(layout.sites.len());
        for s in &layout.sites {
            let ts: Vec<&Tensor> = s.pieces.iter().map(|&i| &pt[i]).collect();
            site_w.push(match s.kind {
                SiteKind::Dense => ts[0].clone(),
                SiteKind::RowSplit => Tensor::cat(&ts, 0)?,
                SiteKind::ColSplit => Tensor::cat(&ts, 1)?,
                SiteKind::BlockDiag => Tensor::stack(&ts, 0)?,
            });
        }
        let n = layout.sites.len();
        Ok(Self {
            layout,
            site_w,
            probes: None,
            inputs: vec![None; n],
            masks: None,
            source,
        })
    }

    /// Evaluation: fixed adapters, no probes, no dropout.
    pub fn plain(adapters: &Adapters, dev: &Device) -> Result<Self> {
        Self::build(
            adapters.layout.clone(),
            PieceSource::Fixed(adapters.tensors(dev)?),
        )
    }

    /// The governed pass: fixed adapters, a zero probe on every site output
    /// for a batch of `b` sequences of `t` tokens, optional dropout masks
    /// (two per layer, `[B, T, d]`, attention then MLP input).
    pub fn probing(
        adapters: &Adapters,
        b: usize,
        t: usize,
        masks: Option<Vec<Tensor>>,
        dev: &Device,
    ) -> Result<Self> {
        let mut f = Self::plain(adapters, dev)?;
        let probes = f
            .layout
            .sites
            .iter()
            .map(|s| Var::zeros((b, t, s.out_dim), DType::F32, dev))
            .collect::<candle_core::Result<Vec<_>>>()?;
        f.probes = Some(probes);
        f.masks = masks;
        Ok(f)
    }

    /// The ungoverned baseline: adapters as variables (autograd computes
    /// their batch gradient directly).
    pub fn with_vars(layout: Arc<AdapterLayout>, vars: Vec<Var>, masks: Option<Vec<Tensor>>) -> Result<Self> {
        let mut f = Self::build(layout, PieceSource::Vars(vars))?;
        f.masks = masks;
        Ok(f)
    }

    /// The variables of [`LoraForward::with_vars`].
    pub fn vars(&self) -> &[Var] {
        match &self.source {
            PieceSource::Vars(v) => v,
            PieceSource::Fixed(_) => &[],
        }
    }

    /// Applies adapter dropout mask `which` (0 attention, 1 MLP) of `layer`.
    pub fn dropout(&self, layer: usize, which: usize, x: &Tensor) -> Result<Tensor> {
        match &self.masks {
            Some(m) => Ok(x.mul(&m[layer * 2 + which])?),
            None => Ok(x.clone()),
        }
    }

    fn site(&mut self, idx: usize, x: &Tensor) -> Result<Tensor> {
        let spec = &self.layout.sites[idx];
        let w = &self.site_w[idx];
        let (b, t, i) = x.dims3()?;
        let y = match spec.kind {
            SiteKind::Dense | SiteKind::RowSplit | SiteKind::ColSplit => x
                .reshape((b * t, i))?
                .matmul(&w.t()?)?
                .reshape((b, t, spec.out_dim))?,
            SiteKind::BlockDiag => {
                let n = spec.pieces.len();
                let (po, pi) = (spec.out_dim / n, spec.in_dim / n);
                let xs = x.reshape((b * t, n, pi))?.transpose(0, 1)?.contiguous()?;
                xs.matmul(&w.transpose(1, 2)?)?
                    .transpose(0, 1)?
                    .reshape((b, t, n * po))?
            }
        };
        if let Some(p) = &self.probes {
            self.inputs[idx] = Some(x.clone());
            Ok((y + p[idx].as_tensor())?)
        } else {
            Ok(y)
        }
    }

    /// The low-rank term `(α/r) · B (A x)` of projection `p` in `layer`.
    pub fn adapter(&mut self, layer: usize, p: Proj, x: &Tensor) -> Result<Tensor> {
        let a = self.layout.site_of(layer, p, false);
        let u = self.site(a, x)?;
        let y = self.site(a + 1, &u)?;
        Ok((y * self.layout.scale())?)
    }
}
