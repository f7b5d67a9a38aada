//! `POST /v1/trace`: the question, and the node's ranked claim plus every
//! ledger fact it cites, each as a leaf with its inclusion proof under one
//! certified checkpoint, so a light client can check the facts with the
//! genesis file alone and, optionally, recompute the scores.

use serde::{Deserialize, Serialize};

use super::{CheckpointAnswer, CitedEntry};
use crate::Digest;

/// `POST /v1/trace`'s request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceRequest {
    /// The campaign (closed).
    pub campaign: Digest,
    /// Prompt text.
    #[serde(default)]
    pub prompt: String,
    /// Output text to trace.
    pub output: String,
    /// Method name (the tuner's selectable methods; the default when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Sources' examples listed (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_examples: Option<usize>,
    /// Events listed by score (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_events: Option<usize>,
}

/// A training example of a traced source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TracedExample {
    /// Example index in its source.
    pub index: u64,
    /// Training step.
    pub step: u64,
    /// Chain position of the event that logged it.
    pub event_seq: u64,
    /// Score.
    pub score: f64,
}

/// A source and its part of the score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TracedSource {
    /// Source id.
    pub source: Digest,
    /// Its title (from the manifest).
    pub title: String,
    /// Rank (1 = most influential), by the method's source score.
    pub rank: usize,
    /// Sum of its examples' scores.
    pub score: f64,
    /// Its salient score (the part that stands out for this query).
    pub salient: f64,
    /// Examples of it scored.
    pub examples: u64,
    /// Its signing authority.
    pub authority: String,
    /// Its manifest entry.
    pub manifest: CitedEntry,
    /// Its highest-scoring examples.
    pub top_examples: Vec<TracedExample>,
}

/// A training event and its part of the score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TracedEvent {
    /// Chain position.
    pub seq: u64,
    /// Sum of its examples' scores.
    pub score: f64,
    /// Its examples scored.
    pub examples: u64,
    /// The event entry.
    pub entry: CitedEntry,
}

/// A parameter block's part of the score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TracedBlock {
    /// Block (layer `l`: attention `2l`, MLP `2l + 1`).
    pub block: u32,
    /// Its summed score.
    pub score: f64,
    /// `|score| / Σ |score|`.
    pub share: f64,
}

/// The base model's part of the lineage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaseLineage {
    /// The base campaign's opening.
    pub campaign: CitedEntry,
    /// Its close, whose final state is the fine-tune's base state.
    pub close: CitedEntry,
    /// Its policy.
    pub policy: CitedEntry,
    /// Its sources' manifests.
    pub sources: Vec<CitedEntry>,
}

/// `POST /v1/trace`'s answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceAnswer {
    /// The campaign traced.
    pub campaign: Digest,
    /// The scoring method's name.
    pub method: String,
    /// The prompt (UTF-8, lossy).
    pub prompt: String,
    /// The output traced.
    pub output: String,
    /// Digest of the full score report (every score's bits): what
    /// `verify trace --recompute` compares.
    pub report_digest: Digest,
    /// The checkpoint every proof is under.
    pub checkpoint: CheckpointAnswer,
    /// The campaign's opening.
    pub campaign_entry: CitedEntry,
    /// The campaign's close.
    pub close_entry: CitedEntry,
    /// Sources, most influential first.
    pub sources: Vec<TracedSource>,
    /// The highest-scoring events, plus every event a listed example came
    /// from.
    pub events: Vec<TracedEvent>,
    /// The policies those events ran under (and the campaign's).
    pub policies: Vec<CitedEntry>,
    /// Parameter blocks by share of the score.
    pub blocks: Vec<TracedBlock>,
    /// Where the base model came from, if it was trained in a campaign on
    /// this ledger.
    pub base: Option<BaseLineage>,
    /// Examples scored.
    pub examples_scored: u64,
    /// Seconds the node spent (preparation included).
    pub seconds: f64,
}
