//! The memorisation signals measured after every step.
//!
//! * **Loss-drop z-score.** Mean loss drop of the step's examples across
//!   the step, standardised against the per-example loss drops of a fixed
//!   held-out probe set over the same step: `(d̄_step − μ_probe) / σ_probe`.
//!   A step that lowers its own examples' loss far more than unseen text
//!   is fitting those examples specifically.
//! * **Extraction.** For each example, the second half of its window is a
//!   held-back continuation of the first half; the signal is the largest
//!   fraction of that continuation that greedy decoding reproduces from
//!   its start. Greedy decoding agrees with the text exactly as long as
//!   the teacher-forced argmax does, so one batched forward pass gives the
//!   exact greedy prefix length (no token-by-token generation).
//! * **Canary exposure** (Carlini et al., "The Secret Sharer"): for a step
//!   that contains a planted canary `prefix ‖ secret`, the log-perplexity
//!   of the secret after the prefix is compared with that of fixed random
//!   candidate secrets of the same format; exposure is
//!   `−log₂ Φ((ℓ_secret − μ)/σ)`, the extrapolated rank in bits.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor, D};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TunerError};
use crate::lora::{Adapters, LoraForward};
use crate::model::{batch_tensors, forward, per_example_loss, ModelConfig};

/// A canary planted in one source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Canary {
    /// Text before the secret (ends the prompt).
    pub prefix: String,
    /// The secret: ASCII digits and letters (candidates redraw each of
    /// them within its class, see [`candidates`]), other bytes kept.
    pub secret: String,
    /// Random candidate secrets the exposure is measured against.
    pub candidates: usize,
}

impl Canary {
    /// The full canary string.
    pub fn text(&self) -> Vec<u8> {
        [self.prefix.as_bytes(), self.secret.as_bytes()].concat()
    }

    /// Whether `window` contains the whole canary.
    pub fn in_window(&self, window: &[u8]) -> bool {
        let c = self.text();
        window.windows(c.len()).any(|w| w == c.as_slice())
    }
}

/// Per-example losses and exact greedy-extraction fractions of `windows`
/// under the adapted model (no gradients).
pub fn evaluate(
    cfg: &ModelConfig,
    base: &BTreeMap<String, Tensor>,
    adapters: &Adapters,
    windows: &[&[u8]],
) -> Result<(Vec<f32>, Vec<f32>)> {
    let dev = Device::Cpu;
    let (inp, tgt) = batch_tensors(windows, &dev)?;
    let mut f = LoraForward::plain(adapters, &dev)?;
    let logits = forward(cfg, base, &inp, Some(&mut f))?;
    let loss = per_example_loss(&logits, &tgt)?.to_vec1::<f32>()?;
    let pred = logits.argmax(D::Minus1)?.to_vec2::<u32>()?;
    let tgt = tgt.to_vec2::<u32>()?;
    let extraction = pred
        .iter()
        .zip(&tgt)
        .map(|(p, t)| {
            let half = t.len() / 2;
            let cont = &t[half..];
            let hit = p[half..].iter().zip(cont).take_while(|(a, b)| a == b).count();
            hit as f32 / cont.len().max(1) as f32
        })
        .collect();
    Ok((loss, extraction))
}

/// `(mean(step drops) − mean(probe drops)) / std(probe drops)`.
pub fn loss_drop_z(
    step_before: &[f32],
    step_after: &[f32],
    probe_before: &[f32],
    probe_after: &[f32],
) -> f32 {
    let mean = |v: &[f32]| v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len().max(1) as f64;
    let drops = |b: &[f32], a: &[f32]| b.iter().zip(a).map(|(x, y)| x - y).collect::<Vec<f32>>();
    let sd = drops(step_before, step_after);
    let pd = drops(probe_before, probe_after);
    let mp = mean(&pd);
    let var = pd.iter().map(|&x| (f64::from(x) - mp).powi(2)).sum::<f64>() / pd.len().max(1) as f64;
    let sigma = var.sqrt().max(1e-4);
    ((mean(&sd) - mp) / sigma) as f32
}

/// Random candidate secrets of the secret's format, fixed by `seed`: each
/// digit, lowercase and uppercase ASCII letter of the secret is drawn again
/// from its class; any other byte (a dash, a space) is kept. (A digit-only
/// secret gets digit-only candidates, as before letters were allowed.)
pub fn candidates(canary: &Canary, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 0x6361_6e61_7279);
    (0..canary.candidates)
        .map(|_| {
            canary
                .secret
                .bytes()
                .map(|c| match c {
                    b'0'..=b'9' => b'0' + rng.gen_range(0..10u8),
                    b'a'..=b'z' => b'a' + rng.gen_range(0..26u8),
                    b'A'..=b'Z' => b'A' + rng.gen_range(0..26u8),
                    other => other,
                })
                .collect()
        })
        .collect()
}

/// Canary exposure in bits under the adapted model.
pub fn exposure(
    cfg: &ModelConfig,
    base: &BTreeMap<String, Tensor>,
    adapters: &Adapters,
    canary: &Canary,
    cands: &[Vec<u8>],
) -> Result<f32> {
    if cands.len() < 2 {
        return Err(TunerError::Config(
            "canary exposure needs at least 2 candidates".into(),
        ));
    }
    let dev = Device::Cpu;
    let prefix = canary.prefix.as_bytes();
    let keep = cfg.context + 1 - canary.secret.len();
    let prefix = &prefix[prefix.len().saturating_sub(keep)..];
    let seqs: Vec<Vec<u8>> = std::iter::once(canary.secret.as_bytes().to_vec())
        .chain(cands.iter().cloned())
        .map(|s| [prefix, s.as_slice()].concat())
        .collect();
    let refs: Vec<&[u8]> = seqs.iter().map(|s| s.as_slice()).collect();
    let (inp, tgt) = batch_tensors(&refs, &dev)?;
    let mut f = LoraForward::plain(adapters, &dev)?;
    let logits = forward(cfg, base, &inp, Some(&mut f))?;
    let (b, t, v) = logits.dims3()?;
    let lsm = candle_nn::ops::log_softmax(&logits.reshape((b * t, v))?, D::Minus1)?;
    let nll = (lsm.gather(&tgt.reshape((b * t, 1))?, 1)?.reshape((b, t))? * -1.0)?;
    let n = canary.secret.len();
    let lp = nll.narrow(1, t - n, n)?.sum(1)?.to_vec1::<f32>()?;
    let (own, rest) = (f64::from(lp[0]), &lp[1..]);
    let mu = rest.iter().map(|&x| f64::from(x)).sum::<f64>() / rest.len() as f64;
    let var = rest.iter().map(|&x| (f64::from(x) - mu).powi(2)).sum::<f64>() / (rest.len() - 1) as f64;
    let z = (own - mu) / var.sqrt().max(1e-6);
    Ok((-log2_phi(z)).max(0.0) as f32)
}

/// `log₂ Φ(z)` for the standard normal CDF, accurate in the far left tail.
fn log2_phi(z: f64) -> f64 {
    let ln = if z < -6.0 {
        // Mills-ratio asymptotic: Φ(z) ≈ φ(z)/|z| · (1 − 1/z²).
        -0.5 * z * z - (-z).ln() - 0.5 * (2.0 * std::f64::consts::PI).ln() + (1.0 - 1.0 / (z * z)).ln()
    } else {
        (0.5 * erfc(-z / std::f64::consts::SQRT_2)).max(1e-300).ln()
    };
    ln / std::f64::consts::LN_2
}

/// Complementary error function (Numerical Recipes `erfcc`, relative error
/// below 1.2e-7).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phi_matches_known_values() {
        assert!((log2_phi(0.0) + 1.0).abs() < 1e-6);
        // Φ(-3) = 0.0013499 → log2 = -9.533
        assert!((log2_phi(-3.0) + 9.533).abs() < 1e-2);
        // the two branches meet near z = -6: Φ(-6) = 9.866e-10
        assert!((log2_phi(-6.0001) - (9.866e-10f64).log2()).abs() < 0.05);
        assert!((log2_phi(-5.9999) - (9.866e-10f64).log2()).abs() < 0.05);
    }

    #[test]
    fn candidates_keep_the_secret_format() {
        let c = Canary {
            prefix: "code ".into(),
            secret: "ab-12 Z".into(),
            candidates: 50,
        };
        let cands = candidates(&c, 9);
        assert_eq!(cands.len(), 50);
        for x in &cands {
            assert_eq!(x.len(), 7);
            assert!(x[0].is_ascii_lowercase() && x[1].is_ascii_lowercase());
            assert_eq!(&x[2..3], b"-");
            assert!(x[3].is_ascii_digit() && x[4].is_ascii_digit());
            assert_eq!(x[5], b' ');
            assert!(x[6].is_ascii_uppercase());
        }
        // Random, not constant, and fixed by the seed.
        assert!(cands.iter().any(|x| x != &cands[0]));
        assert_eq!(cands, candidates(&c, 9));
        assert_ne!(cands, candidates(&c, 10));
    }
}
