//! The base model: a small decoder-only, byte-level transformer.
//!
//! Pre-norm blocks (layer norm → causal multi-head attention → residual,
//! layer norm → GELU MLP → residual), learned positions, a final layer
//! norm and an output head tied to the token embedding. The vocabulary is
//! the 256 byte values, so any text is its own tokenisation and no
//! vocabulary file has to travel with the model.
//!
//! Weights live on the host as named `f32` vectors ([`Weights`]); every
//! step builds candle tensors from them. That keeps the optimizer, the
//! XOR deltas and the state digests plain, deterministic byte operations.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, D};
use provenance::digest::{tagged_hash_parts, ObjectKind};
use provenance::{Digest, ModelShape};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TunerError};
use crate::lora::LoraForward;

/// Vocabulary size: one token per byte value.
pub const VOCAB: usize = 256;

/// The architecture. Its digest is the campaign's `architecture`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Context length in tokens (bytes); an example window is one longer.
    pub context: usize,
    /// Model width.
    pub d_model: usize,
    /// Transformer layers.
    pub layers: usize,
    /// Attention heads per layer.
    pub heads: usize,
    /// MLP hidden width as a multiple of `d_model`.
    pub mlp_mult: usize,
}

impl ModelConfig {
    /// Checks the shape is buildable.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(TunerError::Config(format!("model: {m}")));
        if self.context < 4 || self.d_model == 0 || self.layers == 0 || self.heads == 0 || self.mlp_mult == 0
        {
            return bad("context >= 4 and positive width, layers, heads, mlp_mult required");
        }
        if !self.d_model.is_multiple_of(self.heads) {
            return bad("d_model must be a multiple of heads");
        }
        if self.layers > 255 || self.heads > 255 {
            return bad("at most 255 layers and heads");
        }
        Ok(())
    }

    /// Head width.
    pub fn head_dim(&self) -> usize {
        self.d_model / self.heads
    }

    /// MLP hidden width.
    pub fn hidden(&self) -> usize {
        self.d_model * self.mlp_mult
    }

    /// Example window length in bytes: context plus the last target.
    pub fn window(&self) -> usize {
        self.context + 1
    }

    /// The shape routing and depth need.
    pub fn shape(&self) -> ModelShape {
        ModelShape {
            layers: self.layers as u16,
            heads: self.heads as u16,
        }
    }

    /// Digest of the architecture description (canonical encoding of this
    /// config plus a version tag).
    pub fn architecture_digest(&self) -> Digest {
        let enc = provenance::codec::encode(&(
            "govtune-byte-transformer/v1",
            self.context as u64,
            self.d_model as u64,
            self.layers as u64,
            self.heads as u64,
            self.mlp_mult as u64,
            VOCAB as u64,
        ));
        tagged_hash_parts(ObjectKind::Blob, &[b"architecture", &enc])
    }

    /// Every weight's name and shape, in name order.
    pub fn weight_shapes(&self) -> BTreeMap<String, Vec<usize>> {
        let (d, f, t) = (self.d_model, self.hidden(), self.context);
        let mut m = BTreeMap::new();
        m.insert("tok_emb".to_string(), vec![VOCAB, d]);
        m.insert("pos_emb".to_string(), vec![t, d]);
        m.insert("ln_f.g".to_string(), vec![d]);
        m.insert("ln_f.b".to_string(), vec![d]);
        for l in 0..self.layers {
            for (n, s) in [
                ("ln1.g", vec![d]),
                ("ln1.b", vec![d]),
                ("attn.wq", vec![d, d]),
                ("attn.wk", vec![d, d]),
                ("attn.wv", vec![d, d]),
                ("attn.wo", vec![d, d]),
                ("ln2.g", vec![d]),
                ("ln2.b", vec![d]),
                ("mlp.w1", vec![f, d]),
                ("mlp.b1", vec![f]),
                ("mlp.w2", vec![d, f]),
                ("mlp.b2", vec![d]),
            ] {
                m.insert(format!("l{l:02}.{n}"), s);
            }
        }
        m
    }

    /// Number of parameters.
    pub fn param_count(&self) -> usize {
        self.weight_shapes()
            .values()
            .map(|s| s.iter().product::<usize>())
            .sum()
    }
}

/// Named host tensors, in name order.
#[derive(Debug, Clone, PartialEq)]
pub struct Weights {
    /// The architecture.
    pub config: ModelConfig,
    /// Name → (shape, values).
    pub tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
}

impl Weights {
    /// A seeded random initialisation (GPT-2 style: N(0, 0.02), residual
    /// projections scaled by 1/sqrt(2·layers), norms at identity).
    pub fn init(config: ModelConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let resid = 0.02 / ((2 * config.layers) as f32).sqrt();
        let tensors = config
            .weight_shapes()
            .into_iter()
            .map(|(name, shape)| {
                let n: usize = shape.iter().product();
                let values: Vec<f32> = if name.ends_with(".g") {
                    vec![1.0; n]
                } else if name.ends_with(".b") || name.ends_with(".b1") || name.ends_with(".b2") {
                    vec![0.0; n]
                } else {
                    let std = if name.ends_with("wo") || name.ends_with("w2") {
                        resid
                    } else {
                        0.02
                    };
                    (0..n).map(|_| normal(&mut rng) * std).collect()
                };
                (name, (shape, values))
            })
            .collect();
        Ok(Self { config, tensors })
    }

    /// The weights digest: SHA3 over every tensor's name, shape and
    /// little-endian `f32` bytes, in name order.
    pub fn digest(&self) -> Digest {
        let mut parts: Vec<Vec<u8>> = vec![
            b"weights/v1".to_vec(),
            self.config.architecture_digest().0.to_vec(),
        ];
        for (name, (shape, values)) in &self.tensors {
            parts.push(tensor_header(name, shape));
            parts.push(f32_bytes(values));
        }
        let refs: Vec<&[u8]> = parts.iter().map(|p| p.as_slice()).collect();
        tagged_hash_parts(ObjectKind::Blob, &refs)
    }

    /// Candle tensors of every weight.
    pub fn to_tensors(&self, dev: &Device) -> Result<BTreeMap<String, Tensor>> {
        self.tensors
            .iter()
            .map(|(n, (s, v))| Ok((n.clone(), Tensor::from_slice(v, s.as_slice(), dev)?)))
            .collect()
    }

    /// Writes the weights as safetensors (f32).
    pub fn save(&self, path: &Path) -> Result<()> {
        let t: std::collections::HashMap<String, Tensor> =
            self.to_tensors(&Device::Cpu)?.into_iter().collect();
        candle_core::safetensors::save(&t, path).map_err(TunerError::from)
    }

    /// Reads safetensors weights and checks every name and shape against
    /// `config`.
    pub fn load(config: ModelConfig, path: &Path) -> Result<Self> {
        config.validate()?;
        let bytes = std::fs::read(path).map_err(|e| TunerError::io(path, e))?;
        Self::from_safetensors(config, &bytes)
    }

    /// Parses safetensors bytes (see [`Weights::load`]).
    pub fn from_safetensors(config: ModelConfig, bytes: &[u8]) -> Result<Self> {
        let loaded = candle_core::safetensors::load_buffer(bytes, &Device::Cpu)?;
        let shapes = config.weight_shapes();
        if loaded.len() != shapes.len() {
            return Err(TunerError::ModelMismatch(format!(
                "{} tensors in the file, {} in the architecture",
                loaded.len(),
                shapes.len()
            )));
        }
        let mut tensors = BTreeMap::new();
        for (name, shape) in shapes {
            let t = loaded
                .get(&name)
                .ok_or_else(|| TunerError::ModelMismatch(format!("missing tensor {name}")))?;
            if t.dims() != shape.as_slice() || t.dtype() != DType::F32 {
                return Err(TunerError::ModelMismatch(format!(
                    "{name}: {:?} {:?}, expected {shape:?} f32",
                    t.dims(),
                    t.dtype()
                )));
            }
            let v = t.flatten_all()?.to_vec1::<f32>()?;
            tensors.insert(name, (shape, v));
        }
        Ok(Self { config, tensors })
    }
}

/// A canonical header for a named tensor in digests and blobs.
pub(crate) fn tensor_header(name: &str, shape: &[usize]) -> Vec<u8> {
    let mut h = Vec::with_capacity(name.len() + 8 * shape.len() + 4);
    h.extend_from_slice(&(name.len() as u16).to_be_bytes());
    h.extend_from_slice(name.as_bytes());
    h.extend_from_slice(&(shape.len() as u16).to_be_bytes());
    for s in shape {
        h.extend_from_slice(&(*s as u64).to_be_bytes());
    }
    h
}

/// Little-endian bytes of an `f32` slice.
pub(crate) fn f32_bytes(v: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() * 4);
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

/// A standard normal draw (Box–Muller), deterministic given the RNG.
pub(crate) fn normal(rng: &mut ChaCha20Rng) -> f32 {
    let u1: f64 = rng.gen::<f64>().max(1e-12);
    let u2: f64 = rng.gen::<f64>();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

fn layer_norm(x: &Tensor, g: &Tensor, b: &Tensor) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    let xn = xc.broadcast_div(&(var + 1e-5)?.sqrt()?)?;
    Ok(xn.broadcast_mul(g)?.broadcast_add(b)?)
}

fn get<'a>(w: &'a BTreeMap<String, Tensor>, name: &str) -> Result<&'a Tensor> {
    w.get(name)
        .ok_or_else(|| TunerError::ModelMismatch(format!("missing tensor {name}")))
}

fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    // x [B, T, in] · w[out, in]ᵀ
    let (b, t, i) = x.dims3()?;
    let o = w.dim(0)?;
    Ok(x.reshape((b * t, i))?.matmul(&w.t()?)?.reshape((b, t, o))?)
}

/// The causal mask (0 on and below the diagonal, -1e9 above), `[T, T]`.
fn causal_mask(t: usize, dev: &Device) -> Result<Tensor> {
    let v: Vec<f32> = (0..t * t)
        .map(|k| if k % t > k / t { -1e9 } else { 0.0 })
        .collect();
    Ok(Tensor::from_vec(v, (t, t), dev)?)
}

/// Runs the model on `tokens` (`[B, T]`, `u32`, `T <= context`) and returns
/// logits `[B, T, VOCAB]`. With `lora`, every adapted projection adds its
/// low-rank term (and records what per-example gradients need).
pub fn forward(
    cfg: &ModelConfig,
    w: &BTreeMap<String, Tensor>,
    tokens: &Tensor,
    mut lora: Option<&mut LoraForward>,
) -> Result<Tensor> {
    let (b, t) = tokens.dims2()?;
    if t > cfg.context {
        return Err(TunerError::Config(format!(
            "sequence of {t} tokens exceeds the context {}",
            cfg.context
        )));
    }
    let dev = tokens.device();
    let (d, h, dh) = (cfg.d_model, cfg.heads, cfg.head_dim());
    let emb = get(w, "tok_emb")?;
    let tok = emb.index_select(&tokens.flatten_all()?, 0)?.reshape((b, t, d))?;
    let pos = get(w, "pos_emb")?.narrow(0, 0, t)?;
    let mut x = tok.broadcast_add(&pos)?;
    let mask = causal_mask(t, dev)?;
    let scale = 1.0 / (dh as f64).sqrt();
    for l in 0..cfg.layers {
        let p = |n: &str| get(w, &format!("l{l:02}.{n}"));
        let hn = layer_norm(&x, p("ln1.g")?, p("ln1.b")?)?;
        let mut q = linear(&hn, p("attn.wq")?)?;
        let mut k = linear(&hn, p("attn.wk")?)?;
        let mut v = linear(&hn, p("attn.wv")?)?;
        if let Some(lo) = lora.as_deref_mut() {
            let hd = lo.dropout(l, 0, &hn)?;
            q = (q + lo.adapter(l, crate::lora::Proj::Q, &hd)?)?;
            k = (k + lo.adapter(l, crate::lora::Proj::K, &hd)?)?;
            v = (v + lo.adapter(l, crate::lora::Proj::V, &hd)?)?;
        }
        let split =
            |z: Tensor| -> Result<Tensor> { Ok(z.reshape((b, t, h, dh))?.transpose(1, 2)?.contiguous()?) };
        let (q, k, v) = (split(q)?, split(k)?, split(v)?);
        let att = (q.matmul(&k.t()?)? * scale)?.broadcast_add(&mask)?;
        let att = candle_nn::ops::softmax(&att, D::Minus1)?;
        let z = att.matmul(&v)?.transpose(1, 2)?.reshape((b, t, d))?;
        let mut o = linear(&z, p("attn.wo")?)?;
        if let Some(lo) = lora.as_deref_mut() {
            o = (o + lo.adapter(l, crate::lora::Proj::O, &z)?)?;
        }
        x = (x + o)?;
        let hn = layer_norm(&x, p("ln2.g")?, p("ln2.b")?)?;
        let mut m = linear(&hn, p("mlp.w1")?)?.broadcast_add(p("mlp.b1")?)?;
        if let Some(lo) = lora.as_deref_mut() {
            let hd = lo.dropout(l, 1, &hn)?;
            m = (m + lo.adapter(l, crate::lora::Proj::Up, &hd)?)?;
        }
        let m = m.gelu()?;
        let mut y = linear(&m, p("mlp.w2")?)?.broadcast_add(p("mlp.b2")?)?;
        if let Some(lo) = lora.as_deref_mut() {
            y = (y + lo.adapter(l, crate::lora::Proj::Down, &m)?)?;
        }
        x = (x + y)?;
    }
    let xn = layer_norm(&x, get(w, "ln_f.g")?, get(w, "ln_f.b")?)?;
    linear(&xn, emb)
}

/// Per-example mean next-token cross-entropy: `logits [B, T, V]`,
/// `targets [B, T]` → `[B]`.
pub fn per_example_loss(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let (b, t, v) = logits.dims3()?;
    let lsm = candle_nn::ops::log_softmax(&logits.reshape((b * t, v))?, D::Minus1)?;
    let picked = lsm.gather(&targets.reshape((b * t, 1))?, 1)?.reshape((b, t))?;
    Ok((picked.mean(1)? * -1.0)?)
}

/// Splits windows of `context + 1` bytes into inputs and targets.
pub fn batch_tensors(windows: &[&[u8]], dev: &Device) -> Result<(Tensor, Tensor)> {
    let b = windows.len();
    let Some(first) = windows.first() else {
        return Err(TunerError::Config("empty batch".into()));
    };
    let t = first.len() - 1;
    let mut inp = Vec::with_capacity(b * t);
    let mut tgt = Vec::with_capacity(b * t);
    for w in windows {
        if w.len() != t + 1 {
            return Err(TunerError::Config(
                "windows of different lengths in one batch".into(),
            ));
        }
        inp.extend(w[..t].iter().map(|&c| u32::from(c)));
        tgt.extend(w[1..].iter().map(|&c| u32::from(c)));
    }
    Ok((
        Tensor::from_vec(inp, (b, t), dev)?,
        Tensor::from_vec(tgt, (b, t), dev)?,
    ))
}

/// Greedy decoding of `n` bytes after `prompt` (the prompt is cut to the
/// last `context` bytes at each step).
pub fn greedy(
    cfg: &ModelConfig,
    w: &BTreeMap<String, Tensor>,
    lora: Option<&crate::lora::Adapters>,
    prompt: &[u8],
    n: usize,
) -> Result<Vec<u8>> {
    let dev = Device::Cpu;
    let mut ctx = prompt.to_vec();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let start = ctx.len().saturating_sub(cfg.context);
        let toks: Vec<u32> = ctx[start..].iter().map(|&c| u32::from(c)).collect();
        let len = toks.len();
        let input = Tensor::from_vec(toks, (1, len), &dev)?;
        let logits = match lora {
            Some(a) => {
                let mut f = LoraForward::plain(a, &dev)?;
                forward(cfg, w, &input, Some(&mut f))?
            }
            None => forward(cfg, w, &input, None)?,
        };
        let last = logits.get(0)?.get(len - 1)?;
        let next = last.argmax(0)?.to_scalar::<u32>()? as u8;
        out.push(next);
        ctx.push(next);
    }
    Ok(out)
}
