//! What a run reports: progress after each step, why it stopped, what it did.

use provenance::{CampaignClose, Digest};

/// A progress report after each step.
#[derive(Debug, Clone, Default)]
pub struct ProgressInfo {
    /// Committed steps.
    pub step: u64,
    /// Attempted steps.
    pub attempts: u64,
    /// Most recent training loss.
    pub loss: f32,
    /// Canary exposure (bits) measured on the most recent attempt, rolled
    /// back or not: the largest over the canaries its batch carried, 0 if
    /// it carried none.
    pub exposure: f32,
    /// Examples admitted and kept.
    pub admitted: u64,
    /// Examples refused (admission or rollback).
    pub refused: u64,
    /// Steps rolled back.
    pub rolled_back: u64,
    /// Entries committed.
    pub events: u64,
    /// Seconds since the run started.
    pub elapsed: f64,
}

/// Receives progress reports.
pub trait Progress {
    /// Called after every attempted step.
    fn update(&mut self, info: &ProgressInfo);
}

impl Progress for () {
    fn update(&mut self, _: &ProgressInfo) {}
}

/// Why a run stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// The schedule or step budget is exhausted.
    Finished,
    /// A co-signer refused an entry; the session sits at its last
    /// committed step and can resume.
    CoSignerRefused {
        /// Kind of the refused entry.
        kind: &'static str,
        /// The co-signer's reason.
        reason: String,
    },
    /// The campaign's policy was superseded, so consensus refuses its
    /// records: the session closes the campaign at its last committed
    /// record (the rule in docs/formats.md).
    PolicySuperseded {
        /// The node's reason.
        reason: String,
    },
}

/// A model snapshot kept for tracing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRef {
    /// Committed steps at the snapshot.
    pub step: u64,
    /// Model-state digest.
    pub state: Digest,
    /// Snapshot blob digest.
    pub blob: Digest,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct CampaignOutcome {
    /// The campaign digest.
    pub campaign: Digest,
    /// Why it stopped.
    pub stop: Stop,
    /// Committed steps.
    pub steps: u64,
    /// Attempted steps.
    pub attempts: u64,
    /// Examples admitted and kept, per source position.
    pub admitted: u64,
    /// Examples refused.
    pub refused: u64,
    /// Steps rolled back for memorisation.
    pub rolled_back: u64,
    /// Model state digest at the last committed step.
    pub final_state: Digest,
    /// Head of the campaign's chain.
    pub head: Digest,
    /// Chain entries committed.
    pub entries: u64,
    /// Sketch blob bytes.
    pub sketch_bytes: u64,
    /// Delta blob bytes.
    pub delta_bytes: u64,
    /// Snapshots kept.
    pub snapshots: Vec<SnapshotRef>,
    /// The CampaignClose, if the campaign was closed.
    pub close: Option<CampaignClose>,
}
