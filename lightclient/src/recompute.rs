//! What a verifier can only check by computing: the final model rebuilt
//! from the base and every delta blob, and a trace's scores recomputed bit
//! for bit. Needs the tuner (feature `recompute`); without it each check
//! answers [`VerifyError::NotBuilt`].

use provenance::api::TraceAnswer;
use provenance::record::CampaignRecord;

use crate::client::Client;
use crate::light::VerifyError;
use crate::verify::Verdict;

#[cfg(feature = "recompute")]
mod built {
    use provenance::Digest;
    use tuner::record::PreparedTrace;
    use tuner::score::TraceReport;

    use super::*;

    fn fetcher(node: &Client) -> impl FnMut(&Digest) -> tuner::Result<Vec<u8>> + '_ {
        move |d: &Digest| {
            node.get_bytes(&format!("/v1/blobs/{}", d.to_hex()))
                .map_err(|e| tuner::TunerError::Sink(e.to_string()))
        }
    }

    /// The weights file (an adapter snapshot, safetensors) is exactly the
    /// campaign's base plus its recorded deltas.
    pub fn check_model(
        node: &Client,
        rec: &CampaignRecord,
        weights: &[u8],
        v: &mut Verdict,
    ) -> Result<(), VerifyError> {
        let mut fetch = fetcher(node);
        let rebuilt =
            PreparedTrace::rebuild_model(rec, &mut fetch).map_err(|e| VerifyError::BadBlob(e.to_string()))?;
        v.notes.push(format!(
            "rebuilt the final model from the base and {} delta blobs; every event's model-state digest and the close's final state ({}) match",
            rec.events().count(),
            rec.close.final_state.short()
        ));
        match tuner::lora::Adapters::from_snapshot(rebuilt.layout.clone(), weights) {
            Err(e) => v.violation(format!(
                "the weights file is not an adapter snapshot of this campaign: {e}"
            )),
            Ok(a) => {
                let found = a.state_digest(&rebuilt.base_digest);
                if found != rec.close.final_state {
                    v.violation(format!(
                        "the weights file's model state is {}, the campaign's final state is {}",
                        found.short(),
                        rec.close.final_state.short()
                    ));
                }
            }
        }
        Ok(())
    }

    /// Each replay on `entry` (a training record) against what it claims
    /// to confirm (`tuner::replay::replay_digest`): governance's, the
    /// record's measurement and every sketch of its blob; a data source's,
    /// the sketches of its own examples of the record's first step (`owner`
    /// names a source's authority). Returns (auditor, recorded digest,
    /// recomputed digest) per replay.
    pub fn replay_digests(
        node: &Client,
        entry: &provenance::LedgerEntry,
        role: &dyn Fn(&provenance::AuthorityId) -> Option<provenance::Role>,
        owner: &dyn Fn(&Digest) -> Option<provenance::AuthorityId>,
    ) -> Result<Vec<(provenance::AuthorityId, Digest, Digest)>, VerifyError> {
        let Some(ev) = entry.body.event() else {
            return Ok(Vec::new());
        };
        if entry.audits.iter().all(|a| a.replay.is_none()) {
            return Ok(Vec::new());
        }
        let blob = fetcher(node)(ev.sketch_blob).map_err(|e| VerifyError::BadBlob(e.to_string()))?;
        if storage_digest(&blob) != *ev.sketch_blob {
            return Err(VerifyError::BadBlob(format!(
                "the node served other bytes for sketch blob {}",
                ev.sketch_blob
            )));
        }
        let (_, sketches) =
            tuner::blobs::decode_sketches(&blob).map_err(|e| VerifyError::BadBlob(e.to_string()))?;
        let mut out = Vec::new();
        for a in &entry.audits {
            let Some(r) = &a.replay else { continue };
            let who = &a.ticket.authority;
            let found = if role(who) == Some(provenance::Role::Governance) {
                let all: Vec<Vec<f32>> = sketches.iter().map(|s| s.values.clone()).collect();
                tuner::replay::replay_digest(Some(ev.measurement), &all)
            } else {
                let own: Vec<Vec<f32>> = ev
                    .records
                    .iter()
                    .zip(&sketches)
                    .filter(|(rec, sk)| sk.step == ev.first_step && owner(&rec.source).as_ref() == Some(who))
                    .map(|(_, sk)| sk.values.clone())
                    .collect();
                tuner::replay::replay_digest(None, &own)
            };
            out.push((who.clone(), r.digest, found));
        }
        Ok(out)
    }

    fn storage_digest(b: &[u8]) -> Digest {
        provenance::digest::tagged_hash(provenance::ObjectKind::Blob, b)
    }

    /// Recomputes the answer's scores from the campaign's blobs and
    /// compares them with the node's.
    pub fn check_trace(
        node: &Client,
        rec: &CampaignRecord,
        a: &TraceAnswer,
        v: &mut Verdict,
    ) -> Result<(), VerifyError> {
        let method = tuner::score::Method::by_name(&a.method)
            .ok_or_else(|| VerifyError::Malformed(format!("unknown method {}", a.method)))?;
        let mut fetch = fetcher(node);
        let prep = PreparedTrace::build(rec, &mut fetch).map_err(|e| VerifyError::BadBlob(e.to_string()))?;
        let report = prep
            .trace(a.prompt.as_bytes(), a.output.as_bytes(), method)
            .map_err(|e| VerifyError::BadBlob(e.to_string()))?;
        let differences = differences(&report, a);
        if report.digest() != a.report_digest {
            v.violation(format!(
                "recomputed scores differ: report digest {} against the node's {}",
                report.digest().short(),
                a.report_digest.short()
            ));
        } else if differences.is_empty() {
            v.notes.push(format!(
                "scores recomputed from {} blob bytes: bit-identical (report {}), every field the answer shows matches",
                prep.blob_bytes,
                report.digest().short()
            ));
        }
        for d in differences {
            v.violation(d);
        }
        Ok(())
    }

    /// Every field of the answer that differs from the recomputed report's
    /// view ([`TraceReport::ranked`]), named: sources (id, rank, score,
    /// salient, examples, top examples), events (which, score, examples),
    /// parameter blocks and the number of examples scored. The view's sizes
    /// are the answer's own (the longest top-example list; the number of
    /// top events that yields the cited events).
    pub fn differences(report: &TraceReport, a: &TraceAnswer) -> Vec<String> {
        let mut out = Vec::new();
        let top_examples = a.sources.iter().map(|s| s.top_examples.len()).max().unwrap_or(0);
        let cited: Vec<u64> = a.events.iter().map(|e| e.seq).collect();
        let view = (0..=report.events.len().min(64))
            .map(|k| report.ranked(top_examples, k))
            .find(|v| v.events.iter().map(|e| e.key).collect::<Vec<_>>() == cited);
        let view = match view {
            Some(v) => v,
            None => {
                out.push(format!(
                    "the cited events {cited:?} are not the highest-scoring ones and those of the listed examples"
                ));
                report.ranked(top_examples, 0)
            }
        };
        let bits = |x: f64| x.to_bits();
        if a.examples_scored != view.examples_scored {
            out.push(format!(
                "examples_scored is {} in the answer, {} recomputed",
                a.examples_scored, view.examples_scored
            ));
        }
        if a.sources.len() != view.sources.len() {
            out.push(format!(
                "the answer ranks {} sources, the recomputed report {}",
                a.sources.len(),
                view.sources.len()
            ));
        }
        for (s, r) in a.sources.iter().zip(&view.sources) {
            let name = format!("source at position {} ({})", r.rank, s.title);
            if s.source != r.score.source {
                out.push(format!(
                    "{name} is source {} in the answer, {} recomputed",
                    s.source.short(),
                    r.score.source.short()
                ));
                continue;
            }
            if s.rank != r.rank {
                out.push(format!(
                    "{name}: rank {} in the answer, {} recomputed",
                    s.rank, r.rank
                ));
            }
            if bits(s.score) != bits(r.score.score) {
                out.push(format!(
                    "{name}: score {} in the answer, {} recomputed",
                    s.score, r.score.score
                ));
            }
            if bits(s.salient) != bits(r.score.salient) {
                out.push(format!(
                    "{name}: salient {} in the answer, {} recomputed",
                    s.salient, r.score.salient
                ));
            }
            if s.examples != r.score.examples {
                out.push(format!(
                    "{name}: {} examples in the answer, {} recomputed",
                    s.examples, r.score.examples
                ));
            }
            let same_top = s.top_examples.len() == r.top.len()
                && s.top_examples.iter().zip(&r.top).all(|(x, y)| {
                    (x.index, x.step, x.event_seq, bits(x.score)) == (y.index, y.step, y.event, bits(y.score))
                });
            if !same_top {
                out.push(format!("{name}: its top examples are not the recomputed ones"));
            }
        }
        for (e, k) in a.events.iter().zip(&view.events) {
            if bits(e.score) != bits(k.score) || e.examples != k.examples {
                out.push(format!(
                    "event {}: score {} over {} examples in the answer, {} over {} recomputed",
                    e.seq, e.score, e.examples, k.score, k.examples
                ));
            }
        }
        let same_blocks = a.blocks.len() == view.blocks.len()
            && a.blocks.iter().zip(&view.blocks).all(|(x, y)| {
                (x.block, bits(x.score), bits(x.share)) == (y.block, bits(y.score), bits(y.share))
            });
        if !same_blocks {
            out.push("the parameter blocks' scores or shares are not the recomputed ones".into());
        }
        out
    }
}

#[cfg(feature = "recompute")]
pub use built::{check_model, check_trace, differences, replay_digests};

/// Without the tuner: replay digests cannot be recomputed here.
#[cfg(not(feature = "recompute"))]
pub fn replay_digests(
    _: &Client,
    _: &provenance::LedgerEntry,
    _: &dyn Fn(&provenance::AuthorityId) -> Option<provenance::Role>,
    _: &dyn Fn(&provenance::Digest) -> Option<provenance::AuthorityId>,
) -> Result<Vec<(provenance::AuthorityId, provenance::Digest, provenance::Digest)>, VerifyError> {
    Err(VerifyError::NotBuilt("recomputing replay digests"))
}

/// Without the tuner: the model cannot be rebuilt here.
#[cfg(not(feature = "recompute"))]
pub fn check_model(_: &Client, _: &CampaignRecord, _: &[u8], _: &mut Verdict) -> Result<(), VerifyError> {
    Err(VerifyError::NotBuilt("rebuilding a model"))
}

/// Without the tuner: scores cannot be recomputed here.
#[cfg(not(feature = "recompute"))]
pub fn check_trace(
    _: &Client,
    _: &CampaignRecord,
    _: &TraceAnswer,
    _: &mut Verdict,
) -> Result<(), VerifyError> {
    Err(VerifyError::NotBuilt("recomputing trace scores"))
}
