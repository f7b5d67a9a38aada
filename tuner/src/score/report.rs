//! A query's scores: per example, source, event, step and parameter block.

use provenance::digest::{tagged_hash_parts, ObjectKind};
use provenance::Digest;

use super::method::Method;

/// Share of the highest-scoring examples whose excess makes a source's
/// salient score ([`SourceScore::salient`]).
pub const SALIENT_FRACTION: f64 = 0.01;

/// One example's score.
#[derive(Debug, Clone, PartialEq)]
pub struct ExampleScore {
    /// Source id.
    pub source: Digest,
    /// Example index.
    pub index: u64,
    /// Training step.
    pub step: u64,
    /// Event key.
    pub event: u64,
    /// Score (sum over blocks).
    pub score: f64,
}

/// A source's summed score.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceScore {
    /// Source id.
    pub source: Digest,
    /// Sum of its examples' scores.
    pub score: f64,
    /// Sum of its examples' excess over the query's salient threshold
    /// (the score at rank `max(2, ⌈SALIENT_FRACTION · n⌉)` among all `n`
    /// examples): the part of the source that stands out for this query,
    /// not its diffuse share of every query.
    pub salient: f64,
    /// Examples scored.
    pub examples: u64,
    /// Score per parameter block (index = block).
    pub blocks: Vec<f64>,
}

/// An event's (or step's) summed score.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyScore {
    /// Event key or step.
    pub key: u64,
    /// Sum of its examples' scores.
    pub score: f64,
    /// Examples scored.
    pub examples: u64,
}

/// A parameter block's part of the total score.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockScore {
    /// Block (layer `l`: attention `2l`, MLP `2l + 1`).
    pub block: u32,
    /// Sum over examples of their block-restricted scores.
    pub score: f64,
    /// `|score| / Σ_b |score_b|`.
    pub share: f64,
}

/// A source in a [`Ranked`] view.
#[derive(Debug, Clone, PartialEq)]
pub struct RankedSource {
    /// 1 = most influential (by salient score, then score, then id).
    pub rank: usize,
    /// Its scores.
    pub score: SourceScore,
    /// Its highest-scoring examples (ties by index).
    pub top: Vec<ExampleScore>,
}

/// What a trace answer shows of a report: every source ranked with its top
/// examples, the highest-scoring events plus every event a listed example
/// came from, the parameter blocks. The node builds its answer from this
/// view and a verifier recomputes it, so the two agree field by field.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranked {
    /// Sources by rank.
    pub sources: Vec<RankedSource>,
    /// Events, highest score first (ties by key).
    pub events: Vec<KeyScore>,
    /// Parameter blocks, largest share first.
    pub blocks: Vec<BlockScore>,
    /// Examples scored.
    pub examples_scored: u64,
}

/// The scores of one query.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceReport {
    /// The method.
    pub method: Method,
    /// Per example, in canonical order (step, source, index, event).
    pub examples: Vec<ExampleScore>,
    /// Per source, highest score first.
    pub sources: Vec<SourceScore>,
    /// The salient threshold (see [`SourceScore::salient`]).
    pub salient_threshold: f64,
    /// Per event, highest score first.
    pub events: Vec<KeyScore>,
    /// Per step, in step order.
    pub steps: Vec<KeyScore>,
    /// Per parameter block, largest share first.
    pub blocks: Vec<BlockScore>,
}

impl TraceReport {
    /// Digest of the report's canonical bytes (every score's `f64` bits):
    /// two reports are bit-identical iff their digests are equal.
    pub fn digest(&self) -> Digest {
        let mut b = Vec::new();
        b.extend_from_slice(self.method.name().as_bytes());
        if let Method::Trak { lambda, .. } = self.method {
            b.extend_from_slice(&lambda.to_bits().to_be_bytes());
        }
        if self.method.common() > 0 {
            b.extend_from_slice(&(self.method.common() as u64).to_be_bytes());
        }
        for e in &self.examples {
            b.extend_from_slice(&e.source.0);
            for v in [e.index, e.step, e.event, e.score.to_bits()] {
                b.extend_from_slice(&v.to_be_bytes());
            }
        }
        for s in &self.sources {
            b.extend_from_slice(&s.source.0);
            b.extend_from_slice(&s.score.to_bits().to_be_bytes());
            b.extend_from_slice(&s.salient.to_bits().to_be_bytes());
            b.extend_from_slice(&s.examples.to_be_bytes());
            for x in &s.blocks {
                b.extend_from_slice(&x.to_bits().to_be_bytes());
            }
        }
        for k in self.events.iter().chain(&self.steps) {
            for v in [k.key, k.score.to_bits(), k.examples] {
                b.extend_from_slice(&v.to_be_bytes());
            }
        }
        for x in &self.blocks {
            b.extend_from_slice(&x.block.to_be_bytes());
            b.extend_from_slice(&x.score.to_bits().to_be_bytes());
            b.extend_from_slice(&x.share.to_bits().to_be_bytes());
        }
        b.extend_from_slice(&self.salient_threshold.to_bits().to_be_bytes());
        tagged_hash_parts(ObjectKind::Blob, &[b"trace-report/v1", &b])
    }

    /// Sources by salient score, highest first (ties by plain score, then
    /// source id: most sources have salient score 0).
    pub fn sources_by_salient(&self) -> Vec<&SourceScore> {
        let mut v: Vec<&SourceScore> = self.sources.iter().collect();
        v.sort_by(|a, b| {
            b.salient
                .total_cmp(&a.salient)
                .then(b.score.total_cmp(&a.score))
                .then(a.source.cmp(&b.source))
        });
        v
    }

    /// The score of `source` (0 if it has no scored example).
    pub fn source_score(&self, source: &Digest) -> f64 {
        self.sources
            .iter()
            .find(|s| &s.source == source)
            .map_or(0.0, |s| s.score)
    }

    /// The view a trace answer shows, with `top_examples` examples per
    /// source and the `top_events` highest-scoring events.
    pub fn ranked(&self, top_examples: usize, top_events: usize) -> Ranked {
        let mut cited: std::collections::BTreeSet<u64> =
            self.events.iter().take(top_events).map(|e| e.key).collect();
        let sources: Vec<RankedSource> = self
            .sources_by_salient()
            .into_iter()
            .enumerate()
            .map(|(i, sc)| {
                let mut ex: Vec<&ExampleScore> =
                    self.examples.iter().filter(|e| e.source == sc.source).collect();
                ex.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.index.cmp(&b.index)));
                let top: Vec<ExampleScore> = ex.into_iter().take(top_examples).cloned().collect();
                cited.extend(top.iter().map(|e| e.event));
                RankedSource {
                    rank: i + 1,
                    score: sc.clone(),
                    top,
                }
            })
            .collect();
        let mut events: Vec<KeyScore> = cited
            .into_iter()
            .map(|key| {
                self.events
                    .iter()
                    .find(|e| e.key == key)
                    .cloned()
                    .unwrap_or(KeyScore {
                        key,
                        score: 0.0,
                        examples: 0,
                    })
            })
            .collect();
        events.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.key.cmp(&b.key)));
        Ranked {
            sources,
            events,
            blocks: self.blocks.clone(),
            examples_scored: self.examples.len() as u64,
        }
    }
}
