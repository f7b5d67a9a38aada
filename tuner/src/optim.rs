//! AdamW on host vectors, with per-tensor skipping and snapshots.
//!
//! A tensor whose gradient is `None` is not touched at all in that step:
//! no moment decay, no weight decay, no update. That is what makes a
//! routed-out piece bit-identical across the step even with weight decay
//! and non-zero moments (a standard AdamW would still move it). Bias
//! correction uses the global count of committed steps (as lazy/sparse
//! Adam variants do).

use provenance::digest::{tagged_hash_parts, ObjectKind};
use provenance::Digest;
use serde::{Deserialize, Serialize};

use crate::model::f32_bytes;

/// AdamW hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    /// Learning rate.
    pub lr: f32,
    /// First-moment decay.
    pub beta1: f32,
    /// Second-moment decay.
    pub beta2: f32,
    /// Denominator epsilon.
    pub eps: f32,
    /// Decoupled weight decay.
    pub weight_decay: f32,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// AdamW state: step count and both moments per tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct AdamW {
    /// Hyper-parameters.
    pub config: AdamWConfig,
    /// Steps taken.
    pub step: u64,
    /// First moments.
    pub m: Vec<Vec<f32>>,
    /// Second moments.
    pub v: Vec<Vec<f32>>,
}

impl AdamW {
    /// Zero moments for tensors of the given lengths.
    pub fn new(config: AdamWConfig, lens: impl IntoIterator<Item = usize>) -> Self {
        let lens: Vec<usize> = lens.into_iter().collect();
        Self {
            config,
            step: 0,
            m: lens.iter().map(|&n| vec![0.0; n]).collect(),
            v: lens.iter().map(|&n| vec![0.0; n]).collect(),
        }
    }

    /// One step: `params[i] -= ...` for every `grads[i]` that is `Some`.
    pub fn apply(&mut self, params: &mut [Vec<f32>], grads: &[Option<Vec<f32>>]) {
        self.step += 1;
        let c = self.config;
        let t = self.step as i32;
        let bc1 = 1.0 - c.beta1.powi(t);
        let bc2 = 1.0 - c.beta2.powi(t);
        for (i, g) in grads.iter().enumerate() {
            let Some(g) = g else { continue };
            let (p, m, v) = (&mut params[i], &mut self.m[i], &mut self.v[i]);
            for j in 0..p.len() {
                m[j] = c.beta1 * m[j] + (1.0 - c.beta1) * g[j];
                v[j] = c.beta2 * v[j] + (1.0 - c.beta2) * g[j] * g[j];
                let mh = m[j] / bc1;
                let vh = v[j] / bc2;
                p[j] -= c.lr * (mh / (vh.sqrt() + c.eps) + c.weight_decay * p[j]);
            }
        }
    }

    /// Digest of the optimizer state: step count and both moments.
    pub fn digest(&self) -> Digest {
        let mut parts: Vec<Vec<u8>> = vec![b"adamw/v1".to_vec(), self.step.to_be_bytes().to_vec()];
        for (m, v) in self.m.iter().zip(&self.v) {
            parts.push((m.len() as u64).to_be_bytes().to_vec());
            parts.push(f32_bytes(m));
            parts.push(f32_bytes(v));
        }
        let refs: Vec<&[u8]> = parts.iter().map(|p| p.as_slice()).collect();
        tagged_hash_parts(ObjectKind::Blob, &refs)
    }
}
