//! A governed fine-tuning campaign: the step pipeline and its events.
//!
//! [`Session::open`] checks the sources against their manifests, submits
//! the [`Campaign`](provenance::Campaign) entry and measures the probe
//! set; [`Session::run`] then takes steps until the schedule or step
//! budget is exhausted, a co-signer refuses an entry (the session then
//! sits at its last committed state and `run` can be called again to
//! resume), or an error occurs. [`run`] does both and closes the campaign.

use std::collections::BTreeMap;
use std::time::Instant;

use provenance::{Digest, ExampleRecord, MemorisationSignals, RefusalReason};
use rand_chacha::ChaCha20Rng;

use crate::blobs::SketchRecord;
use crate::compute::Prepared;
use crate::data::{PreparedSource, Schedule};
use crate::error::Result;
use crate::lora::Adapters;
use crate::optim::AdamW;
use crate::sink::{EventSink, Verdict};

mod clock;
mod entries;
mod outcome;
mod session;
mod settings;
mod step;

pub use clock::{Clock, SimClock, SystemClock};
pub use entries::block_measures;
pub use outcome::{CampaignOutcome, Progress, ProgressInfo, SnapshotRef, Stop};
pub use settings::{build_campaign, CampaignSpec, TrainSettings};

/// The trainable state, restored by rollback and by a co-signer refusal.
#[derive(Debug, Clone)]
struct TrainState {
    adapters: Adapters,
    opt: AdamW,
    step: u64,
    rng: ChaCha20Rng,
    schedule: Schedule,
    probe_before: Vec<f32>,
    attempts: u64,
}

/// Ledger-side state: the chain and the counts.
#[derive(Debug, Clone, Default)]
struct Ledger {
    seq: u64,
    prev: Digest,
    admitted: BTreeMap<usize, u64>,
    refused: BTreeMap<usize, u64>,
}

/// Records and blobs of the event being accumulated.
#[derive(Debug, Clone)]
struct Span {
    start: Adapters,
    /// The optimizer before its first step (what an auditor replays from).
    opt_start: AdamW,
    first_step: u64,
    /// The first order position it draws from.
    order_start: u64,
    /// When its last step was admitted.
    time: provenance::Timestamp,
    records: Vec<ExampleRecord>,
    sketches: Vec<SketchRecord>,
    losses: Vec<f32>,
    signals: MemorisationSignals,
    admitted: BTreeMap<usize, u64>,
}

/// A campaign in progress.
pub struct Session {
    spec: CampaignSpec,
    prep: Prepared,
    sources: Vec<PreparedSource>,
    campaign_digest: Digest,
    st: TrainState,
    committed: TrainState,
    ledger: Ledger,
    span: Option<Span>,
    agg: BTreeMap<(Digest, RefusalReason), u64>,
    agg_steps: Option<(u64, u64)>,
    /// Where the next refusal aggregate's span starts.
    agg_from: u64,
    clock: Box<dyn Clock>,
    rolled_back: u64,
    sketch_bytes: u64,
    delta_bytes: u64,
    snapshots: Vec<SnapshotRef>,
    last_loss: f32,
    last_exposure: f32,
    started: Instant,
    done: bool,
}

/// Opens, runs and (if it finished) closes a campaign.
pub fn run(
    spec: CampaignSpec,
    clock: Box<dyn Clock>,
    sink: &mut dyn EventSink,
    progress: &mut dyn Progress,
) -> Result<CampaignOutcome> {
    let (mut s, v) = Session::open(spec, clock, sink)?;
    if let Verdict::Refused { reason } = v {
        return s.close(
            sink,
            Stop::CoSignerRefused {
                kind: "Campaign",
                reason,
            },
        );
    }
    let stop = s.run(sink, progress)?;
    s.close(sink, stop)
}
