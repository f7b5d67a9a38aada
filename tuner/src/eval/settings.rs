//! What the evaluation runs: its sizes and seeds, full and CI-sized.

/// What the evaluation runs.
#[derive(Debug, Clone)]
pub struct EvalSettings {
    /// Training windows per source.
    pub train_windows: usize,
    /// Held-out query windows per source.
    pub heldout_windows: usize,
    /// Planted canaries.
    pub canaries: usize,
    /// Windows carrying each canary.
    pub canary_copies: usize,
    /// Epochs.
    pub epochs: u64,
    /// Examples per step.
    pub batch: usize,
    /// Sketch side `s`.
    pub sketch_side: usize,
    /// Recorded checkpoints (plus the final model).
    pub checkpoints: u64,
    /// Random half-subsets retrained for the LDS.
    pub subsets: usize,
    /// Bootstrap resamples of the LDS interval.
    pub bootstrap: usize,
    /// Also retrain with each source left out.
    pub leave_one_out: bool,
    /// Also run example and epoch granularity.
    pub granularities: bool,
    /// Seed of canaries, subsets and bootstrap.
    pub seed: u64,
    /// Letters per canary secret.
    pub secret_len: usize,
    /// LoRA rank (None: the config's).
    pub rank: Option<usize>,
    /// Byte offset of canaries in their windows (None: random).
    pub canary_offset: Option<usize>,
}

impl EvalSettings {
    /// The full evaluation (about 10 minutes on 2 cores, release).
    pub fn full() -> Self {
        Self {
            train_windows: 96,
            heldout_windows: 4,
            canaries: 20,
            canary_copies: 4,
            epochs: 1,
            batch: 16,
            sketch_side: 4,
            checkpoints: 4,
            subsets: 32,
            bootstrap: 1000,
            leave_one_out: true,
            granularities: true,
            seed: 2026,
            secret_len: 30,
            rank: None,
            canary_offset: None,
        }
    }

    /// The CI-sized evaluation (a few minutes).
    pub fn quick() -> Self {
        Self {
            train_windows: 64,
            heldout_windows: 2,
            canaries: 20,
            canary_copies: 3,
            epochs: 1,
            batch: 16,
            sketch_side: 4,
            checkpoints: 2,
            subsets: 8,
            bootstrap: 200,
            leave_one_out: false,
            granularities: true,
            seed: 2026,
            secret_len: 30,
            rank: None,
            canary_offset: None,
        }
    }
}
