//! Planting distinct random canaries into the sources' training texts.

use std::collections::BTreeSet;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::error::{Result, TunerError};

/// A planted canary.
#[derive(Debug, Clone)]
pub struct PlantedCanary {
    /// Source position.
    pub source: usize,
    /// Prompt part.
    pub prefix: Vec<u8>,
    /// Output part.
    pub secret: Vec<u8>,
    /// Windows carrying it.
    pub windows: Vec<u64>,
}

const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyz";

fn random_word(rng: &mut ChaCha20Rng, n: usize) -> Vec<u8> {
    (0..n).map(|_| LETTERS[rng.gen_range(0..LETTERS.len())]).collect()
}

/// Plants `n` distinct canaries, `copies` windows each, round-robin over
/// the sources' training texts.
pub fn plant(
    texts: &mut [Vec<u8>],
    window: usize,
    n: usize,
    copies: usize,
    secret_len: usize,
    offset: Option<usize>,
    seed: u64,
) -> Result<Vec<PlantedCanary>> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 0x6361_6e61);
    let mut used: BTreeSet<(usize, u64)> = BTreeSet::new();
    let mut out = Vec::with_capacity(n);
    for j in 0..n {
        let source = j % texts.len();
        let windows = (texts[source].len() / window) as u64;
        if windows < copies as u64 * (n / texts.len() + 1) as u64 {
            return Err(TunerError::Config("too few windows for the canaries".into()));
        }
        let mut prefix = random_word(&mut rng, 10);
        prefix.extend_from_slice(b" is ");
        let secret = random_word(&mut rng, secret_len);
        let c = [prefix.as_slice(), &secret].concat();
        if c.len() > window {
            return Err(TunerError::Config("the canary is longer than a window".into()));
        }
        let mut ws = Vec::with_capacity(copies);
        while ws.len() < copies {
            let w = rng.gen_range(0..windows);
            if used.insert((source, w)) {
                let r = rng.gen_range(0..=window - c.len());
                let off = offset.unwrap_or(r).min(window - c.len());
                let s = w as usize * window + off;
                texts[source][s..s + c.len()].copy_from_slice(&c);
                ws.push(w);
            }
        }
        ws.sort_unstable();
        out.push(PlantedCanary {
            source,
            prefix,
            secret,
            windows: ws,
        });
    }
    Ok(out)
}
